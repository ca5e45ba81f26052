"""fp32 against bf16-mixed SFT on this CPU, side by side: the length sweep's recipe (one row per
step, no packing, one process) on its committed rows, the same steps in each precision.

    python benchmarks/precision.py [--steps 12] [--cap 250]

Prints per precision: tokens/s (steady state), the loss at each step, the end-of-turn loss;
then the speed ratio and the largest loss difference. Last line: one JSON object. bf16-mixed
pays off only where the CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere it is
emulated and slower.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset_builder.core import storage  # noqa: E402
from dataset_builder.core.config import load_config  # noqa: E402
from dataset_builder.models import demo_model  # noqa: E402
from train.config import SFTConfig  # noqa: E402
from train.cut import cut_rows  # noqa: E402
from train.sft import run_sft  # noqa: E402


def _run(precision: str, data: str, steps: int, tmp: str) -> dict:
    cfg = load_config(SFTConfig, "ray_jobs/configs/sft_demo.yaml", [
        f"model={demo_model()}", f"data={data}", f"output={tmp}/{precision}", "num_workers=0",
        "cpus_per_worker=2", "packing=false", f"max_steps={steps}", "learning_rate=5.0e-5",
        "gradient_checkpointing=false", f"precision={precision}", f"save_every={steps}",
        "progress=false"])
    run_sft(cfg)
    hist = [json.loads(line) for line in storage.read_bytes(
        f"{tmp}/{precision}/metrics.jsonl").decode().splitlines() if line.strip()]
    hist = [h for h in hist if "loss" in h]
    tail = hist[2:] or hist   # the first steps warm up allocators and kernels
    return {"tokens_per_s": sum(h["tokens"] for h in tail) / sum(h["seconds"] for h in tail),
            "loss": [round(h["loss"], 4) for h in hist],
            "eot_loss": [round(h["eot_loss"], 4) if h.get("eot_loss") is not None else None
                         for h in hist]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--cap", type=int, default=250, help="answers cut to this many words")
    ap.add_argument("--data", default="examples/length_sweep/data")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = cut_rows(storage.read_dataset(a.data), a.cap)
        w = storage.DatasetWriter(f"{tmp}/rows")
        w.write(rows)
        w.commit()
        res = {p: _run(p, f"{tmp}/rows", a.steps, tmp) for p in ("fp32", "bf16-mixed")}
    for p, r in res.items():
        print(f"{p:>10}: {r['tokens_per_s']:7.1f} tokens/s  loss {r['loss']}")
        print(f"{'':>10}  end-of-turn loss {r['eot_loss']}")
    speed = res["bf16-mixed"]["tokens_per_s"] / res["fp32"]["tokens_per_s"]
    diff = max(abs(x - y) for x, y in zip(res["fp32"]["loss"], res["bf16-mixed"]["loss"]))
    print(f"bf16-mixed / fp32 tokens/s: {speed:.3f}; largest loss difference: {diff:.4f}")
    print(json.dumps({"bf16_mixed_over_fp32": round(speed, 3), "max_loss_diff": round(diff, 4),
                      "steps": a.steps, "cap": a.cap}))


if __name__ == "__main__":
    main()
