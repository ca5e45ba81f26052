"""The pipeline job end to end on the tiny models: AgentWrite -> curation -> SFT -> evaluation
of the base and the trained model -> report. A stage that fails stops the pipeline with one
line naming it and its directory; the rerun skips the finished stages and resumes there; a
third run skips everything."""
from __future__ import annotations

import json

import pytest

from dataset_builder.core import storage
from dataset_builder.core.config import load_config
from ray_jobs.pipeline import PipelineConfig, PipelineError, run_pipeline

pytestmark = pytest.mark.integration
PROMPTS = ["Write a 3,000-word story about a bell foundry.",
           "Write a 2,500-word guide to repairing a wooden chair.",
           "Write a 4,000-word report on river ferries.",
           "Write a 2,000-word letter to a future gardener.",
           "写一篇3000字的文章，介绍一座古桥。"]


def _cfg(model: str, writer: str, tmp_path, *extra: str) -> PipelineConfig:
    inp = tmp_path / "instructions.jsonl"
    inp.write_text("".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in PROMPTS))
    return load_config(PipelineConfig, "ray_jobs/configs/pipeline_tiny.yaml", [
        f"base_model={model}", f"output={tmp_path / 'run'}", f"generator_model={writer}",
        # The demo model writes (random weights emit invalid UTF-8, which curation rejects as
        # broken_utf8, so too few rows would reach SFT); 16 tokens a step keep it quick.
        f"generate.set=['input={inp}', 'selection.languages=[en]', "
        "agentwrite.max_step_tokens=16]", *extra])


def test_pipeline_runs_every_stage_resumes_after_a_failure_and_skips_when_done(
        ray_local, tiny_narrow_model, demo_model, tmp_path, capsys):
    # SFT cannot fit any row in 16 tokens: the pipeline stops there with one line.
    bad = _cfg(tiny_narrow_model, demo_model, tmp_path, "sft.set=[num_workers=0, max_steps=2, max_length=16]")
    with pytest.raises(PipelineError) as err:
        run_pipeline(bad)
    msg = str(err.value)
    assert msg.startswith("stage sft failed (output ") and f"{tmp_path}/run/sft" in msg
    assert "\n" not in msg
    state = storage.read_json(str(tmp_path / "run" / "_pipeline.json"))
    assert set(state["stages"]) == {"generate", "curate"}
    gen = state["stages"]["generate"]["summary"]
    assert gen["rows_in_output"] == 4 and gen["rejects_by_reason"] == {
        "selection: language_not_generated": 1}
    assert state["stages"]["curate"]["summary"]["rows_out"] >= 2

    capsys.readouterr()
    report = run_pipeline(_cfg(tiny_narrow_model, demo_model, tmp_path))
    out = capsys.readouterr().out
    assert "generate: finished earlier, skipped" in out and "curate: finished earlier, skipped" in out
    assert "sft: running" in out and "eval_sft: running" in out
    run = tmp_path / "run"
    for stage in ("generate", "curate", "sft", "eval_base", "eval_sft"):
        assert (run / stage / "_config.yaml").exists(), stage   # each stage runnable alone
    assert (run / "sft" / "model" / "_manifest.json").exists()
    for side in ("base", "trained"):
        assert report[side]["S_l"] is not None and report[side]["ruler_max_words"] is not None
    assert report["trained"]["model"].endswith("sft/model")
    assert report["dropped"]["generate"] == {"selection: language_not_generated": 1}
    saved = json.loads((run / "report.json").read_text())
    assert {"mean_words_2k_plus", "S_l", "S_q", "ruler_max_words"} <= set(saved["trained"])
    assert (run / "report.md").exists() and (run / "ruler_before_after.png").exists()

    before = (run / "_pipeline.json").read_text()
    run_pipeline(_cfg(tiny_narrow_model, demo_model, tmp_path))
    out = capsys.readouterr().out
    assert out.count("finished earlier, skipped") == 5 and "running" not in out
    assert (run / "_pipeline.json").read_text() == before
