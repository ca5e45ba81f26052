"""AgentWrite generation job (curation is its own job, ray_jobs.curate; the pipeline chains them).

Locally (starts a local Ray if none is running):
    python -m ray_jobs.generate --config ray_jobs/configs/generate_demo.yaml --set output=./data/demo
On a cluster:
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m ray_jobs.generate --config ray_jobs/configs/generate_gpu.yaml \
        --set input=s3://bucket/instructions.jsonl --set output=s3://bucket/runs/r1
What a run will cost, before it starts (no engine, no API call):
    python -m ray_jobs.generate --config ray_jobs/configs/generate_demo.yaml --dry-run
List every config field: python -m ray_jobs.generate --help-config
"""
from __future__ import annotations

import json
import sys

from dataset_builder import estimate
from dataset_builder.core import progress, storage
from dataset_builder.core.model_check import check_model
from dataset_builder.generation import GenerateConfig, earlier, run
from ray_jobs.common import cli, init_ray


def preflight(cfg: GenerateConfig) -> None:
    """Everything that can be checked before Ray and the engines start (seconds, not ~30 s)."""
    if cfg.engine.backend == "vllm":
        check_model(cfg.engine.model, "engine.model")
    storage.check_reachable(cfg.input, cfg.storage, must_exist=True)
    storage.check_reachable(cfg.output, cfg.storage)
    progress.check_interval(cfg.progress_interval_s)


def dry_run(cfg: GenerateConfig) -> dict:
    """--dry-run: the same checks, then the estimate (dataset_builder/estimate.py): lines for
    people, then one JSON object on the last line. No Ray, no engine, no API call."""
    preflight(cfg)
    res = estimate.estimate(cfg, *earlier(cfg.output.rstrip("/"), cfg))
    print("\n".join(estimate.lines(res)))
    print(json.dumps(res))
    return res


def main(cfg: GenerateConfig) -> dict:
    preflight(cfg)
    init_ray()
    stats = run(cfg)
    summary = {k: stats[k] for k in ("instructions_in", "selected", "scheduled_this_run",
                                     "written_this_run", "failed", "rows_in_output", "output_tokens_per_s",
                                     "prefix_hit_rate_write_steps", "wall_seconds")}
    print(f"results: {cfg.output.rstrip('/')}/generations  (rejects: _rejects/, stats: "
          f"_stats.json)")
    print("summary: " + json.dumps(summary))
    print(f"words per response (mean): {stats['mean_response_words']:.0f}; engine output "
          f"tokens/s: {stats['output_tokens_per_s']:.1f}")
    return stats


CONFIG = GenerateConfig  # the pipeline job loads this stage's config with it

if __name__ == "__main__":
    sys.exit(cli(CONFIG, main, description=__doc__, dry_run=dry_run))
