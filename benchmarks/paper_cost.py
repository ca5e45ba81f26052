"""What the paper's data run would cost, before spending: the generation dry run of the GPU
config (generate_gpu.yaml, as pipeline_paper.yaml runs it) on 6,000 instructions, written by
GPT-4o through its API as in the paper, at gpt-4o-2024-08-06 list prices (2025: USD 2.50 input,
1.25 cached input, 10.00 output per million tokens).

    python benchmarks/paper_cost.py [--n 6000] [--set estimate.price_output_per_m=...]

The 6,000 instructions are the shipped training instructions (instructions/train.jsonl, 335
lines, English and Chinese) cycled, each copy's prompt marked "(variant k)" so that it is a new
instruction to the job (an identical prompt is a duplicate). GPT-4o's tokenizer is not at hand,
so tokens per word are the stated defaults (estimate.DEFAULT_TOKENS_PER_WORD; override with
--set estimate.tokens_per_word=...). Nothing is called: no API key is needed. Prints the dry
run's lines; last line one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ray_jobs.common import cli  # noqa: E402
from ray_jobs.generate import CONFIG, dry_run, main  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT4O = ["engine.backend=openai", "engine.model=gpt-4o-2024-08-06",
         "engine.base_url=https://api.openai.com/v1", "engine.num_gpus=0",
         "estimate.price_input_per_m=2.5", "estimate.price_cached_input_per_m=1.25",
         "estimate.price_output_per_m=10.0"]


def write_input(path: str, n: int) -> None:
    with open(os.path.join(ROOT, "instructions", "train.jsonl"), encoding="utf-8") as f:
        base = [json.loads(line) for line in f if line.strip()]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            row = dict(base[i % len(base)])
            k = i // len(base)
            if k:
                row["prompt"] = f"{row['prompt']} (variant {k})"
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=6000, help="instructions in the input")
    p.add_argument("--set", action="append", default=[], help="more config overrides")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "instructions.jsonl")
        write_input(inp, args.n)
        sets = [f"input={inp}", f"output={tmp}/out", *GPT4O, *args.set]
        return cli(CONFIG, main, ["--config", os.path.join(ROOT, "ray_jobs", "configs",
                                                           "generate_gpu.yaml"),
                                  *[x for s in sets for x in ("--set", s)], "--dry-run"],
                   dry_run=dry_run)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
