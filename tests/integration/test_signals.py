"""Curation's quality signals on the demo model through the engine stage: a coherent answer
has a lower perplexity than its words shuffled; each answer is more relevant under its own
instruction than under another; off-topic rows and shuffled text are dropped by the thresholds
with their reasons (and signals) in the rejects; a looping answer, the lowest perplexity of all,
is still dropped by the repetition filter. Hand-written texts (tests/data/signals_rows.json);
measured with the demo model in fp32 (transformers, 2026-12-07): matched relevance 0.17-0.23,
mismatched -0.18 to -0.02, shuffled perplexity 745 vs 22-29, the loop 1.3."""
import json
import random
from pathlib import Path

import pytest

from dataset_builder.core import storage
from dataset_builder.core.config import load_config
from dataset_builder.core.records import GENERATION
from dataset_builder.curate import shards
from dataset_builder.curate.config import CurateConfig
from dataset_builder.curate.pipeline import run_curation

pytestmark = pytest.mark.integration
TEXTS = json.loads((Path(__file__).parents[1] / "data" / "signals_rows.json").read_text())


def _row(rid: str, prompt: str, answer: str) -> dict:
    return {"id": rid, "prompt": prompt, "source": "fixture", "lang": "en",
            "required_words": None, "plan": [{"main_point": "all of it", "words": 200}],
            "paragraphs": [answer], "response": answer, "response_words": 0,
            "model": "fixture-model", "config_hash": "abc", "layout": "paper",
            "plan_attempts": 1, "step_prompt_tokens": [1, 1], "step_output_tokens": [1, 1],
            "step_cached_tokens": [0, 0], "finish_reasons": ["stop", "stop"],
            "resumed_steps": 0}


def _fixture(uri: str) -> None:
    t = TEXTS
    words = t["tea_answer"].split()
    random.Random(0).shuffle(words)
    rows = [_row("garden", t["garden_prompt"], t["garden_answer"]),
            _row("tea", t["tea_prompt"], t["tea_answer"]),
            _row("voice_under_garden", t["garden_prompt"], t["voice_answer"]),
            _row("garden_under_tea", t["tea_prompt"], t["garden_answer"]),
            _row("tea_under_garden", t["garden_prompt"], t["tea_answer"]),
            _row("tea_shuffled", t["tea_prompt"], " ".join(words)),
            _row("loop", t["garden_prompt"], " ".join([t["loop_sentence"]] * 15))]
    w = storage.DatasetWriter(uri)
    import pyarrow as pa
    w.write(pa.Table.from_pylist(rows, schema=GENERATION))
    w.commit()


def test_signals_score_filter_and_report(ray_local, demo_model, tmp_path):
    inp, out = str(tmp_path / "gen"), str(tmp_path / "cur")
    _fixture(inp)
    cfg = load_config(CurateConfig, "ray_jobs/configs/curate_demo.yaml", [
        f"input={inp}", f"output={out}", f"signals.engine.model={demo_model}",
        "filters.min_response_words=50", "dedup.exact_prompt=false",
        "dedup.exact_response=false", "dedup.prompt.enabled=false",
        "dedup.response.enabled=false", "signals.min_relevance=0.05",
        "signals.max_perplexity=200", "progress=false"])
    stats = run_curation(cfg)
    kept = {r["id"]: r for r in storage.read_dataset(out).to_pylist()}
    rejects = {r["id"]: r for r in storage.read_dataset(
        storage.join(out, shards.REJECTS_DIR)).to_pylist()}
    every = {**kept, **rejects}
    assert set(kept) == {"garden", "tea"}
    # the loop: lowest perplexity of all, but never scored: the repetition filter took it first
    assert rejects["loop"]["stage"] == "filter"
    assert rejects["loop"]["reason"].startswith(("repetition", "duplicate_paragraphs"))
    assert rejects["loop"]["perplexity"] is None
    # coherent text is more probable than the same words shuffled; the shuffle is dropped
    assert every["tea_shuffled"]["perplexity"] > 200 > every["tea"]["perplexity"]
    assert rejects["tea_shuffled"]["reason"].startswith("high_perplexity")
    # each answer is more relevant under its own instruction than under the other
    assert every["garden"]["relevance"] > every["garden_under_tea"]["relevance"]
    assert every["tea"]["relevance"] > every["tea_under_garden"]["relevance"]
    for rid in ("voice_under_garden", "garden_under_tea", "tea_under_garden"):
        assert rejects[rid]["stage"] == "signals", rejects[rid]
        assert rejects[rid]["reason"].startswith("low_relevance: ")
        assert rejects[rid]["relevance"] < 0.05
    s = stats["signals"]
    assert s["scored"] == 6 and s["lowest_relevance"][0]["id"] in (
        "voice_under_garden", "garden_under_tea", "tea_under_garden")
    assert s["highest_perplexity"][0]["id"] == "tea_shuffled"
    report = storage.read_bytes(storage.join(out, "report.md")).decode()
    assert "## Quality signals" in report and "### Lowest relevance" in report
    assert storage.exists(storage.join(out, "signals_hist.png"))
