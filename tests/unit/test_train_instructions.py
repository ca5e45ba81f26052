"""The shipped training instructions: enough, both languages, varied, all readable, and none
overlapping LongBench-Write (normalized text or a shared 13-gram)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from dataset_builder.core import instructions
from eval.contamination import BENCHMARK, BenchmarkIndex, tokens

TRAIN = Path(__file__).resolve().parents[2] / "instructions" / "train.jsonl"


def _rows():
    return [json.loads(line) for line in TRAIN.read_text("utf-8").splitlines()]


def test_enough_varied_readable_instructions():
    rows = _rows()
    parsed, rejects = instructions.parse_jsonl(TRAIN.read_bytes(), "train")
    assert not rejects and len(parsed) == len(rows) >= 300
    langs = Counter(r["lang"] for r in parsed)
    assert langs["en"] >= 150 and langs["zh"] >= 60
    assert len({r["id"] for r in parsed}) == len(parsed)            # no duplicate prompts
    assert len(Counter(r["genre"] for r in rows)) >= 10
    lengths = [r["required_words"] for r in rows]
    assert min(lengths) >= 2000 and max(lengths) <= 20000 and len(set(lengths)) >= 8
    for r in rows:  # the length stated in the text is the one recorded
        assert instructions.extract_required_words(r["prompt"]) == r["required_words"], r["prompt"]
    assert (TRAIN.parent / "LICENSE").exists()


def test_no_overlap_with_longbench_write():
    idx = BenchmarkIndex.load()
    hits = [(r["prompt"][:60], idx.check(r["prompt"])) for r in _rows()]
    assert [h for h in hits if h[1]] == []


def test_overlap_check_catches_copies_and_long_shared_spans():
    idx = BenchmarkIndex.load()
    bench = [json.loads(line)["prompt"] for line in BENCHMARK.read_text("utf-8").splitlines()]
    en = next(p for p in bench if len(tokens(p)) >= 20 and p.isascii())
    zh = next(p for p in bench if len(p) >= 30 and not p.isascii())
    assert idx.check("  " + en.upper() + " ").startswith("in_benchmark")  # normalized equal
    assert idx.check("Please do this: " + " ".join(tokens(en)[:14]) + " thanks").startswith(
        "benchmark_overlap")
    assert idx.check("前言" + zh[:16] + "后记").startswith("benchmark_overlap")
    assert idx.check("Write a 3,000-word story about a lighthouse on the moon.") is None
