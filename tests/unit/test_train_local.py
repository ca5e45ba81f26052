"""The training loop without Ray (num_workers 0, what the GPU machine runs): checkpoints in
<output>/checkpoints, a run cut after a checkpoint resumes at the step after it."""
from __future__ import annotations

import json
import shutil

from dataset_builder.core.config import load_config
from train.config import SFTConfig
from train.sft import run_sft


def test_local_run_resumes_from_its_last_checkpoint(tmp_path, tiny_narrow_model):
    rows = [{"messages": [{"role": "user", "content": f"Count to {i}."},
                          {"role": "assistant", "content": " ".join(map(str, range(i)))}]}
            for i in range(3, 11)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    cfg = load_config(SFTConfig, "ray_jobs/configs/sft_tiny.yaml", [
        f"model={tiny_narrow_model}", f"data={tmp_path}/d.jsonl", f"output={out}",
        "num_workers=0", "max_steps=5", "save_every=2", "keep_checkpoints=2", "progress=false"])
    first = run_sft(cfg)
    assert first["final_metrics"]["steps"] == 5 and not first["resumed_from"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000004",
                                                                         "step-00000005"]
    before = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # cut the run after step 4: no final checkpoint, no export
    shutil.rmtree(out / "checkpoints" / "step-00000005")
    shutil.rmtree(out / "model")
    again = run_sft(cfg)
    assert again["resumed_from"] == [4]
    hist = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == [1, 2, 3, 4, 5]
    assert hist[:4] == before[:4]  # steps 1-4 come from the checkpoint, not trained again
    assert abs(hist[4]["loss"] - before[4]["loss"]) < 1e-3  # step 5 again, same packs
    assert run_sft(cfg)["skipped"]
