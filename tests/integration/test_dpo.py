"""DPO on Ray Train for real: 2 CPU workers (gloo) train the tiny model with TRL's DPOTrainer
on a separable toy set of pairs on moto S3; a worker is killed after the first checkpoint and
training goes on from it; reward accuracy rises; bad pairs are rejects with file and line; the
export loads in vLLM; a finished job rerun does nothing."""
from __future__ import annotations

import json
import threading

import pytest

from dataset_builder.core import storage
from dataset_builder.core.config import load_config
from tests.helpers import chat_with_export, kill_a_worker_after_checkpoint
from train.config import DPOTrainConfig
from train.dpo import run_dpo

pytestmark = pytest.mark.integration
BUCKET = "s3://test-bucket"


def _pairs(uri: str) -> None:
    """Chosen: a long, on-topic answer; rejected: a curt one. Plus three bad rows."""
    rows = [{"prompt": f"Write about {t}.", "chosen": f"{t.capitalize()} are " +
             " ".join([t, "and", "light"] * 10) + ".",
             "rejected": [{"role": "assistant", "content": "No."}]}
            for t in ("rivers", "bridges", "owls", "tea", "glass", "maps", "bells", "salt")]
    rows += [{"prompt": "Same?", "chosen": "yes", "rejected": "yes"},         # identical_sides
             {"prompt": "Missing?", "chosen": "yes"},                          # missing_side
             {"prompt": "Typed?", "chosen": [{"role": "assistant", "content": 5}],
              "rejected": "no"}]                                               # non_string
    storage.write_bytes_atomic(uri, ("".join(json.dumps(r) + "\n" for r in rows)
                                     + "{broken\n").encode())


def test_two_workers_resume_after_a_kill_and_rewards_separate(ray_local, tiny_narrow_model,
                                                              tmp_path):
    data, out = f"{BUCKET}/dpo-{tmp_path.name}/pairs.jsonl", f"{BUCKET}/dpo-{tmp_path.name}/run"
    _pairs(data)
    cfg = load_config(DPOTrainConfig, "ray_jobs/configs/dpo_tiny.yaml",
                      [f"model={tiny_narrow_model}", f"data={data}", f"output={out}"])
    killed: dict = {}
    t = threading.Thread(target=kill_a_worker_after_checkpoint, args=(out, killed))
    t.start()
    try:
        manifest = run_dpo(cfg)
    finally:
        t.join()
    assert killed, "no worker was killed (the run ended before its first checkpoint?)"
    assert manifest["resumed"] and manifest["kind"] == "dpo"
    final = manifest["final_metrics"]
    assert final["step"] == 8 and final["first_accuracy"] <= 0.5 < final["rewards/accuracies"]
    assert final["rewards/margins"] > 0
    assert manifest["data"]["rows_kept"] == 8
    rejects = storage.read_dataset(f"{out}/_rejects").to_pylist()
    assert sorted((r["line"], r["reason"].split(":")[0]) for r in rejects) == [
        (9, "identical_sides"), (10, "missing_side"), (11, "chosen"), (12, "malformed_json")]
    assert "non_string_content" in next(r["reason"] for r in rejects if r["line"] == 11)
    assert all(r["file"] == data for r in rejects)
    assert storage.exists(f"{out}/curves.png") and storage.exists(f"{out}/report.md")
    assert run_dpo(cfg)["skipped"]

    assert chat_with_export(f"{out}/model", tmp_path / "model", "dpo-export").output_tokens > 0
