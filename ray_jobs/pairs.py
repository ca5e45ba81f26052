"""Preference pairs for DPO: k answers per long-writing instruction from a model (the SFT
export), each scored by the judge (S_q) and against its required length (S_l); the best is
`chosen`, a clearly worse one `rejected`. LongBench-Write prompts are refused.

Locally (tiny model samples, demo model judges; seconds to minutes on CPU):
    python -m ray_jobs.pairs --config ray_jobs/configs/pairs_tiny.yaml \
        --set model=$(python -m dataset_builder.models tiny) \
        --set scoring.judge.model=$(python -m dataset_builder.models demo) \
        --set data=instructions/train.jsonl --set output=./data/pairs
On a cluster (the SFT model on GPU engines, GPT-4o as judge; OPENAI_API_KEY on the nodes):
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m ray_jobs.pairs --config ray_jobs/configs/pairs.yaml \
        --set model=s3-synced/path/to/sft/model --set data=s3://bucket/instructions.jsonl \
        --set output=s3://bucket/runs/pairs1
A rerun reuses stored samples and cached judgements. Every field: --help-config
"""
from __future__ import annotations

import json
import sys

from dataset_builder.core import storage
from dataset_builder.core.model_check import check_model
from ray_jobs.common import cli, init_ray, save_resolved_config
from train.pairs import PairsConfig, run_pairs


def preflight(cfg: PairsConfig) -> None:
    """Models, instructions and output checked before Ray and the engines start."""
    if cfg.scoring.engine.backend == "vllm":
        check_model(cfg.model, "model")
    if cfg.scoring.judge_enabled and cfg.scoring.judge.backend == "vllm":
        check_model(cfg.scoring.judge.model, "scoring.judge.model")
    storage.check_reachable(cfg.data, cfg.storage, must_exist=True)
    storage.check_reachable(cfg.output, cfg.storage)


def main(cfg: PairsConfig) -> dict:
    preflight(cfg)
    init_ray()
    report = run_pairs(cfg)
    out = cfg.output.rstrip("/")
    save_resolved_config(cfg, out, cfg.storage)
    print(f"pairs: {out}  ({report['pairs']} pairs from {report['instructions']} instructions, "
          f"{report['samples']} samples; report: {out}/report.md, rejects: {out}/_rejects)")
    print("dropped: " + json.dumps(report["dropped"]) + "  coverage: "
          + json.dumps(report["coverage"]))
    return report


CONFIG = PairsConfig  # the pipeline job loads this stage's config with it

if __name__ == "__main__":
    sys.exit(cli(CONFIG, main, description=__doc__))
