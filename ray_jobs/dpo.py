"""DPO job: preference pairs -> TRL's DPOTrainer on Ray Train -> model (the paper's last step).

Locally (tiny model; num_workers: 0 trains in this process without Ray):
    python -m ray_jobs.dpo --config ray_jobs/configs/dpo_tiny.yaml \
        --set model=./data/sft/model --set data=./data/pairs --set output=./data/dpo
On a cluster (GPU workers; checkpoints and the model on S3):
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m ray_jobs.dpo --config ray_jobs/configs/dpo.yaml \
        --set model=/mnt/models/sft-8b --set data=s3://bucket/runs/pairs1 \
        --set output=s3://bucket/runs/dpo1
A rerun with the same output resumes from the last checkpoint; a finished output is skipped.
Every config field: python -m ray_jobs.dpo --help-config
"""
from __future__ import annotations

import json
import sys

from ray_jobs.common import cli, init_ray, save_resolved_config
from train.config import DPOTrainConfig
from train.dpo import run_dpo
from train.sft import TrainError


def main(cfg: DPOTrainConfig) -> dict:
    if cfg.num_workers > 0:
        init_ray()
    manifest = run_dpo(cfg)
    out = cfg.output.rstrip("/")
    if not manifest.get("skipped"):
        save_resolved_config(cfg, out, cfg.storage)
    data = manifest.get("data", {})
    print(f"model: {out}/model" + ("  [already finished: nothing to do]"
                                   if manifest.get("skipped") else ""))
    print(f"data: {data.get('rows_kept')} pairs trained, {data.get('rows_rejected')} rejected "
          f"({json.dumps(data.get('reject_reasons', {}))}; see {out}/_rejects)")
    print("metrics: " + json.dumps(manifest.get("final_metrics", {}))
          + f"  (report: {out}/report.md)")
    return manifest


CONFIG = DPOTrainConfig  # the pipeline job loads this stage's config with it

if __name__ == "__main__":
    sys.exit(cli(CONFIG, main, description=__doc__, expected=(TrainError,)))
