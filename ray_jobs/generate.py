"""AgentWrite generation job (optionally followed by curation).

Locally (starts a local Ray if none is running):
    python ray_jobs/generate.py --config ray_jobs/configs/demo.yaml --set output=./data/demo
On a cluster:
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python ray_jobs/generate.py --config ray_jobs/configs/gpu.yaml \
        --set input=s3://bucket/instructions.jsonl --set output=s3://bucket/runs/r1
List every config field: python ray_jobs/generate.py --help-config
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ray  # noqa: E402

from dataset_builder.generate import GenerateConfig, run  # noqa: E402
from dataset_builder.jobs import cli  # noqa: E402


def main(cfg: GenerateConfig) -> dict:
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")  # set by `ray job submit`
        # A fresh local Ray binds to loopback only.
        ray.init(address=address, log_to_driver=False,
                 **({} if address else {"_node_ip_address": "127.0.0.1"}))
    stats = run(cfg)
    if cfg.curate:
        from dataset_builder.curate.pipeline import CurateConfig, run_curation
        curated = f"{cfg.output.rstrip('/')}/longwriter"
        stats["curation"] = run_curation(CurateConfig(
            input=f"{cfg.output.rstrip('/')}/generations", output=curated, storage=cfg.storage))
    summary = {k: stats[k] for k in ("instructions_in", "selected", "written_this_run",
                                     "failed", "rows_in_output", "output_tokens_per_s",
                                     "prefix_hit_rate_write_steps", "wall_seconds")}
    print(f"results: {cfg.output.rstrip('/')}/generations  (rejects: _rejects/, stats: "
          f"_stats.json)")
    print("summary: " + json.dumps(summary))
    print(f"words per response (mean): {stats['mean_response_words']:.0f}; engine output "
          f"tokens/s: {stats['output_tokens_per_s']:.1f}")
    return stats


if __name__ == "__main__":
    sys.exit(cli(GenerateConfig, main, description=__doc__))
