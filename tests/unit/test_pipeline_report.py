"""The pipeline's before/after report from evaluation outputs (pure: files in a tmp dir)."""
from __future__ import annotations

import json

from dataset_builder.core import storage
from eval.compare import side_summary, write_pipeline_report


def _results(model: str, s_l: float, ruler: dict) -> dict:
    ci = [s_l - 5, s_l + 5]
    return {"overall": {"S": s_l, "S_ci95": ci, "S_l": s_l, "S_l_ci95": ci, "S_q": None,
                        "S_q_ci95": [None, None], "n": 4, "n_judged": 0},
            "protocol": {"model": model},
            "ruler": {"max_output_length": max(ruler.values()),
                      "per_length": {str(k): {"mean_output": v} for k, v in ruler.items()}}}


def _samples(outputs: list[int | None]) -> list[dict]:
    required = [300, 1000, 2000, 5000]
    return [{"id": str(i), "required_length": r, "output_length": o}
            for i, (r, o) in enumerate(zip(required, outputs))]


def test_side_summary_counts_only_2k_plus_and_finished():
    s = side_summary(_results("m", 40.0, {1000: 400, 5000: 900}), _samples([250, 700, 800, None]))
    assert s["mean_words_2k_plus"] == 800 and s["n_2k_plus"] == 1     # the failed one is out
    assert s["mean_words_by_bucket"]["[0,500)"] == {"n": 1, "mean_words": 250}
    assert s["ruler_max_words"] == 900 and s["ruler_curve"] == {"1000": 400, "5000": 900}


def test_report_files_and_change(tmp_path):
    out = str(tmp_path)
    for stage, model, s_l, outs, ruler in (
            ("eval_base", "base", 30.0, [300, 400, 500, 600], {1000: 500, 5000: 600}),
            ("eval_sft", "sft", 55.0, [900, 1200, 1500, 1700], {1000: 1300, 5000: 1800})):
        storage.write_json(f"{out}/{stage}/results.json", _results(model, s_l, ruler))
        storage.write_jsonl(f"{out}/{stage}/samples.jsonl", _samples(outs))
    state = {"stages": {
        "generate": {"wall_s": 10.0, "summary": {"output_tokens_per_s": 99.0,
                                                 "rejects_by_reason": {"language_not_generated": 3}}},
        "curate": {"wall_s": 2.0, "summary": {"rows_out": 5,
                                              "rejects_by_reason": {"repetition": 1}}},
        # a resumed evaluation: 400 tokens generated in this run's 4 s, the rest reused
        "eval_sft": {"wall_s": 4.0, "summary": {"output_tokens_generated": 400}}}}
    report = write_pipeline_report(out, state)
    assert report["stages"]["eval_sft"]["summary"]["output_tokens_per_s"] == 100.0
    assert report["change"] == {"mean_words_2k_plus_ratio": 2.91, "S_l_points": 25.0,
                                "S_q_points": None}
    assert report["dropped"] == {"generate": {"language_not_generated": 3},
                                 "curate": {"repetition": 1}, "pairs": {}}
    assert report["trained"] == report["sft"] and "dpo" not in report
    saved = json.loads((tmp_path / "report.json").read_text())
    for side in ("base", "trained"):
        assert {"mean_words_2k_plus", "S_l", "S_q", "ruler_max_words"} <= set(saved[side])
    md = (tmp_path / "report.md").read_text()
    assert "| S_l | 30.0 [25.0, 35.0] | 55.0 [50.0, 60.0] |" in md and "language_not_generated 3" in md
    for png in ("ruler_before_after.png", "lengths_before_after.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
