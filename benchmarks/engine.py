"""Engine throughput inside a Ray actor: output tokens/s at several batch sizes, and the effect
of vLLM's CPU core reservation (EngineConfig.cpu_reserved_cores).

    python benchmarks/engine.py                 # demo model, batches 8 and 64, reserved 0 vs 1
Each row: one engine actor, N requests of 128 forced output tokens submitted at once.
The last line is one JSON object. Reservation runs one after the other (one engine at a time).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ray  # noqa: E402

from dataset_builder.llm import EngineConfig, Sampling  # noqa: E402
from dataset_builder.llm.actor import start_engines  # noqa: E402
from dataset_builder.models import demo_model  # noqa: E402


def measure(model: str, reserved: int | None, batches: list[int], tokens: int) -> dict:
    cfg = EngineConfig(model=model, max_model_len=2048, max_num_seqs=max(batches),
                       cpu_kvcache_gib=2, cpu_reserved_cores=reserved)
    [actor] = start_engines(cfg, 1)
    out = {}
    for n in batches:
        msgs = [[{"role": "user", "content": f"Tell me about topic {i}."}] for i in range(n)]
        t = time.perf_counter()
        res = ray.get(actor.chat_many.remote(msgs, Sampling(max_tokens=tokens, min_tokens=tokens,
                                                            ignore_eos=True)))
        out[n] = sum(c.output_tokens for c in res) / (time.perf_counter() - t)
    ray.kill(actor)
    time.sleep(3)  # let the engine processes exit before the next one starts
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--batches", default="8,64")
    ap.add_argument("--tokens", type=int, default=128)
    a = ap.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    batches = [int(b) for b in a.batches.split(",")]
    model = a.model or str(demo_model())
    rows = {r: measure(model, r, batches, a.tokens) for r in (0, 1)}
    print(f"{'reserved':>8} " + " ".join(f"{'batch ' + str(b):>10}" for b in batches))
    for r, v in rows.items():
        print(f"{r:>8} " + " ".join(f"{v[b]:>10.0f}" for b in batches))
    print(json.dumps({"tok_s_reserved0": rows[0], "tok_s_reserved1": rows[1],
                      "reserved0_vs_1_at_max_batch": round(rows[0][batches[-1]] / rows[1][batches[-1]], 2)}))
