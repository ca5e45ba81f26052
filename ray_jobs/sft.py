"""SFT job: LongWriter-6k-style conversations -> packed, token-averaged SFT on Ray Train -> model.

Locally (starts a local Ray when num_workers > 0; num_workers: 0 trains in this process):
    python -m ray_jobs.sft --config ray_jobs/configs/sft_tiny.yaml \
        --set model=$(python -m dataset_builder.models tiny) \
        --set data=./data/demo/longwriter --set output=./data/sft
On a cluster (GPU workers; checkpoints and the model on S3):
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m ray_jobs.sft --config ray_jobs/configs/sft.yaml \
        --set model=/models/Llama-3.1-8B --set data=s3://bucket/longwriter-6k \
        --set output=s3://bucket/runs/sft1
A rerun with the same output resumes from the last checkpoint; a finished output is skipped.
Every config field: python -m ray_jobs.sft --help-config
"""
from __future__ import annotations

import json
import sys

from ray_jobs.common import cli, init_ray, save_resolved_config
from train.config import SFTConfig
from train.sft import TrainError, run_sft


def main(cfg: SFTConfig) -> dict:
    if cfg.num_workers > 0:
        init_ray()
    manifest = run_sft(cfg)
    out = cfg.output.rstrip("/")
    if not manifest.get("skipped"):
        save_resolved_config(cfg, out, cfg.storage)
    data, final = manifest.get("data", {}), manifest.get("final_metrics", {})
    print(f"model: {out}/model" + ("  [already finished: nothing to do]"
                                   if manifest.get("skipped") else ""))
    print(f"data: {data.get('rows_kept')} rows trained, {data.get('rows_rejected')} rejected "
          f"({json.dumps(data.get('reject_reasons', {}))}; see {out}/_rejects), "
          f"{data.get('packs')} packs")
    if manifest.get("resumed_from"):
        print(f"resumed from checkpoint(s) at step {manifest['resumed_from']}")
    print("metrics: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                    for k, v in final.items()}) + f"  (report: {out}/report.md)")
    return manifest


CONFIG = SFTConfig  # the pipeline job loads this stage's config with it

if __name__ == "__main__":
    sys.exit(cli(CONFIG, main, description=__doc__, expected=(TrainError,)))
