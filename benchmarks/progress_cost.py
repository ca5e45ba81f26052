"""What the progress lines cost, and how close the dry run's estimate comes: the demo's
generation (`make demo`'s first job) run as a user runs it, with progress off and on in turn.

    python benchmarks/progress_cost.py [--interval 30] [--pairs 1]

Each run is `python -m ray_jobs.generate` in its own process with its own local Ray, watched
with psutil every 0.5 s: CPU seconds (user + system) of the driver, of the engine replica (the
Ray Data actor and the vLLM processes under it), and of the rest (Ray's own processes, tasks,
the progress board's actor). The work is the same in both runs (same seeds, fresh outputs).
Before the runs, the dry run (dataset_builder/estimate.py) estimates the run's output and
input tokens; after, they are compared with what `_stats.json` counts.
Takes ~4 minutes per run on 2 cores. Prints a table; last line one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import proc  # noqa: E402
from dataset_builder.core.config import load_config  # noqa: E402
from dataset_builder.estimate import estimate  # noqa: E402
from dataset_builder.generation import GenerateConfig  # noqa: E402
from dataset_builder.models import demo_model  # noqa: E402

CONFIG = "ray_jobs/configs/generate_demo.yaml"


def run_job(sets: list[str], log: str) -> dict:
    """The job in a subprocess (benchmarks/proc.py): CPU seconds by process kind, and its
    progress lines."""
    r = proc.run_job("generate", CONFIG, sets, log)
    lines = [x for x in open(log).read().splitlines() if x.startswith("[generate ")]
    return {**{k: r[k] for k in ("wall_s", "cpu_driver_s", "cpu_engine_s", "cpu_other_s")},
            "progress_lines": len(lines)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interval", type=float, default=30.0, help="progress_interval_s when on")
    ap.add_argument("--pairs", type=int, default=1, help="off/on pairs of runs")
    args = ap.parse_args()
    model = str(demo_model())
    runs, tmp = [], tempfile.mkdtemp(prefix="progress-cost-")
    base = [f"engine.model={model}"]
    cfg = load_config(GenerateConfig, CONFIG, [*base, f"output={tmp}/est"])
    est = estimate(cfg, set(), set())
    for i in range(args.pairs):
        for on in (False, True):
            out = f"{tmp}/run{i}-{'on' if on else 'off'}"
            r = run_job([*base, f"output={out}", f"progress={str(on).lower()}",
                         f"progress_interval_s={args.interval}"], f"{out}.log")
            stats = json.load(open(f"{out}/_stats.json"))
            runs.append({"progress": on, **r, "output_tokens": stats["output_tokens"],
                         "prompt_tokens": stats["prompt_tokens"],
                         "prefix_hit_rate": round(stats["prefix_hit_rate"], 3),
                         "written": stats["written_this_run"]})
            print(json.dumps(runs[-1]), flush=True)
    print(f"{'progress':>8} {'wall s':>7} {'driver':>7} {'engine':>8} {'other':>7} {'lines':>5}")
    for r in runs:
        print(f"{'on' if r['progress'] else 'off':>8} {r['wall_s']:>7} {r['cpu_driver_s']:>7} "
              f"{r['cpu_engine_s']:>8} {r['cpu_other_s']:>7} {r['progress_lines']:>5}")
    act = runs[-1]
    ratio = {"output_tokens": round(est["output_tokens"] / act["output_tokens"], 3),
             "input_tokens": round(est["input_tokens"] / act["prompt_tokens"], 3),
             "prefix_hit_rate": round(est["input_tokens_cached"] / est["input_tokens"], 3)}
    print(f"dry run vs run: output tokens {est['output_tokens']:,} vs {act['output_tokens']:,}"
          f" ({ratio['output_tokens']}x), input tokens {est['input_tokens']:,} vs "
          f"{act['prompt_tokens']:,} ({ratio['input_tokens']}x); cached share "
          f"{ratio['prefix_hit_rate']} vs {act['prefix_hit_rate']}; rows estimated "
          f"{est['to_generate']}, written {act['written']}")
    print(json.dumps({"runs": runs, "estimate": {k: est[k] for k in (
        "to_generate", "output_tokens", "input_tokens", "input_tokens_cached")},
        "estimate_over_actual": ratio}))


if __name__ == "__main__":
    main()
