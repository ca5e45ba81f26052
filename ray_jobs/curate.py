"""Curation job: a generation directory -> LongWriter-6k shards, rejects, stats and report.

Runs on any committed generation dataset (after ray_jobs.generate; ray_jobs.pipeline chains
them). A rerun on the same input, config and code is skipped.

Locally (starts a local Ray if none is running):
    python -m ray_jobs.curate --config ray_jobs/configs/curate.yaml \
        --set input=./data/demo/generations --set output=./data/demo/longwriter
On a cluster:
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m ray_jobs.curate --config ray_jobs/configs/curate.yaml \
        --set input=s3://bucket/runs/r1/generations --set output=s3://bucket/runs/r1/longwriter
List every config field: python -m ray_jobs.curate --help-config
"""
from __future__ import annotations

import json
import sys

from dataset_builder.core import storage
from dataset_builder.core.model_check import check_model
from dataset_builder.curate.config import CurateConfig
from dataset_builder.curate.pipeline import run_curation
from ray_jobs.common import cli, init_ray


def main(cfg: CurateConfig) -> dict:
    storage.check_reachable(cfg.input, cfg.storage, must_exist=True)  # fail before starting Ray
    if cfg.signals.enabled:   # the reference model, before any row is scored
        check_model(cfg.signals.engine.model, "signals.engine.model")
    init_ray()
    stats = run_curation(cfg)
    funnel = stats["funnel"]
    reasons = {r: n for s in funnel["stages"] for r, n in s["reasons"].items()}
    print(f"results: {cfg.output}  (report: report.md, rejects: _rejects/, stats: _stats.json)"
          + ("  [already up to date: skipped]" if stats.get("skipped") else ""))
    print(f"rows in {funnel['rows_in']} -> out {funnel['rows_out']} "
          f"(rejected {funnel['rejected']}: {json.dumps(reasons)})")
    sig = stats.get("signals") or {}
    if sig.get("scored"):
        print(f"signals: {sig['scored']} rows scored; relevance median "
              f"{sig['relevance'].get('median')}, perplexity median "
              f"{sig['perplexity'].get('median')} (report.md: the extremes, with their text)")
    print_kept(cfg.output, cfg.storage)
    return stats


def print_kept(uri: str, storage_cfg, n: int = 10) -> None:
    """The first rows of the curated set: words and the start of the instruction."""
    table = storage.read_dataset(uri, storage_cfg)
    if table is None or not table.num_rows:
        return
    rows = table.select(["response_words", "messages"]).slice(0, n).to_pylist()
    for r in rows:
        print(f"  kept: {r['response_words']:>6} words  {r['messages'][0]['content'][:70]}")
    if table.num_rows > n:
        print(f"  ... and {table.num_rows - n} more")


CONFIG = CurateConfig  # the pipeline job loads this stage's config with it

if __name__ == "__main__":
    sys.exit(cli(CONFIG, main, description=__doc__))
