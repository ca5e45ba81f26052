"""The generation job at 1,000 instructions on the instant engine (the smallest size of
benchmarks/scale.py): the real orchestration (Ray Data, the engine stage, the journal, the sink,
the manifest), then curation of its output, whose dedup must find exactly the planted
near-duplicates, and training's refusal of the result."""
import json
import random
from collections import Counter

import pytest

from dataset_builder.core import storage
from dataset_builder.core.config import load_config
from dataset_builder.curate.config import CurateConfig
from dataset_builder.curate.pipeline import run_curation
from dataset_builder.generation import GenerateConfig, run
from dataset_builder.llm import make_engine
from train.data import InstantDataError, read_conversations

pytestmark = pytest.mark.integration
N = 1000
WORDS = ("river", "garden", "harbor", "winter", "market", "letter", "bridge", "forest", "stone",
         "music", "island", "teacher", "kitchen", "museum", "engine", "village", "season")


def _instructions(path):
    rng = random.Random(7)
    with open(path, "w") as f:
        for i in range(N):
            w = (400, 800)[i % 2]
            topic = " ".join(rng.choices(WORDS, k=8))
            f.write(json.dumps({"prompt": f"Write a {w}-word essay on {topic} ({i}).",
                                "required_words": w}) + "\n")


def test_a_thousand_instructions_through_the_job_then_curation(ray_local, tmp_path):
    _instructions(tmp_path / "in.jsonl")
    out = tmp_path / "out"
    cfg = load_config(GenerateConfig, "ray_jobs/configs/generate_instant.yaml",
                      [f"input={tmp_path / 'in.jsonl'}", f"output={out}", "progress=false",
                       "engine.instant.duplicate_share=0.05", "engine.num_cpus=0.5"])
    stats = run(cfg)
    assert stats["written_this_run"] == stats["rows_in_output"] == N and stats["failed"] == 0
    assert stats["generated_steps"] == 9 * N and stats["model"] == "instant:rehearsal"
    manifest = storage.load_manifest(f"{out}/generations")
    assert manifest["backend"] == "instant"
    gens = storage.read_dataset(f"{out}/generations").to_pylist()
    assert {g["model"] for g in gens} == {"instant:rehearsal"}
    assert all(g["response_words"] == g["required_words"] for g in gens)
    journal = [p for p in (out / "_journal").rglob("*") if p.is_file()]
    assert len(journal) == N  # one object per instruction, not one per step
    assert run(cfg)["scheduled_this_run"] == 0  # a rerun finds everything done

    # The planted rows of one (required length, group) are near copies: dedup keeps one each.
    engine = make_engine(cfg.engine)
    groups = Counter((g["required_words"], engine.planted(g["id"])) for g in gens
                     if engine.planted(g["id"]) is not None)
    expected = sum(n - 1 for n in groups.values())
    assert expected >= 10
    ccfg = load_config(CurateConfig, "ray_jobs/configs/curate.yaml",
                       [f"input={out}/generations", f"output={tmp_path / 'cur'}",
                        "filters.min_response_words=300", "progress=false"])
    cur = run_curation(ccfg)
    dropped = {s["stage"]: s["dropped"] for s in cur["funnel"]["stages"]}
    assert dropped.get("dedup") == expected and cur["funnel"]["rows_out"] == N - expected, dropped
    assert cur["backend"] == "instant"
    assert "instant engine" in (tmp_path / "cur" / "report.md").read_text()
    with pytest.raises(InstantDataError):
        read_conversations(str(tmp_path / "cur"))
