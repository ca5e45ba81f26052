"""LongBench-Write (S_l, S_q, S) and LongWrite-Ruler evaluation job.

Locally (starts a local Ray if none is running; tiny CPU model, demo model as judge):
    python -m ray_jobs.evaluate --config ray_jobs/configs/evaluate_tiny.yaml \
        --set engine.model=$(python -m dataset_builder.models tiny) \
        --set judge.model=$(python -m dataset_builder.models demo) --set output=./data/eval
As published (vLLM model under test on GPUs, GPT-4o as judge). OPENAI_API_KEY must be in the
environment of the cluster's nodes (a secrets manager or the node setup), not in
--runtime-env-json, whose values the dashboard shows to anyone who can open it:
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m ray_jobs.evaluate --config ray_jobs/configs/evaluate.yaml \
        --set engine.model=THUDM/LongWriter-llama3.1-8b --set output=s3://bucket/eval/r1
Reruns into the same output skip finished generations and cached judgements.
List every config field: python -m ray_jobs.evaluate --help-config
"""
from __future__ import annotations

import json
import sys

from dataset_builder.core import storage
from dataset_builder.core.model_check import check_model
from eval.config import EvalConfig
from eval.evaluate import run_eval
from eval.longbench_data import benchmark_uri
from ray_jobs.common import cli, init_ray


def preflight(cfg: EvalConfig) -> None:
    """Models, benchmark data and output checked before Ray and the engines start."""
    if cfg.generate and cfg.engine.backend == "vllm":
        check_model(cfg.engine.model, "engine.model")
    if cfg.judge_enabled and cfg.judge.backend == "vllm":
        check_model(cfg.judge.model, "judge.model")
    storage.check_reachable(benchmark_uri(cfg.data_dir, cfg.subset), cfg.storage,
                            must_exist=True)
    storage.check_reachable(cfg.output, cfg.storage)


def main(cfg: EvalConfig) -> dict:
    preflight(cfg)
    init_ray()

    results = run_eval(cfg)
    o, c = results["overall"], results["coverage"]
    out = cfg.output.rstrip("/")
    print(f"results: {out}/results.json  report: {out}/report.md  samples: {out}/samples.jsonl")
    if not results["published_comparable"]:
        print("not comparable with the paper: " + "; ".join(results["not_comparable_because"]))
    summary = {"S": o["S"], "S_l": o["S_l"], "S_q": o["S_q"], "items": c["items"],
               "generated": c["generated"], "judged": c["judged"],
               "rejected_lines": c["rejected_lines"], "complete": c["complete"]}
    if results["ruler"]:
        summary["ruler_max_length"] = results["ruler"]["max_output_length"]
        summary["ruler_share_reached"] = results["ruler"]["share_reached"]
    print("summary: " + json.dumps(summary))
    return results


CONFIG = EvalConfig  # the pipeline job loads this stage's config with it

if __name__ == "__main__":
    sys.exit(cli(CONFIG, main, description=__doc__))
