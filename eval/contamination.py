"""Keep LongBench-Write clean: is a training prompt (or a preference-pair prompt) one of the
benchmark's, or does it share a long n-gram with one?

Two checks, as in the usual contamination audits (GPT-3's 13-gram rule): the normalized text
(NFKC, casefold, single spaces) equal to a benchmark prompt's, or any n-gram of tokens shared
with one, where a token is an English word or a single CJK character, so the rule works for
both languages. Used by the tests on the shipped instructions and by any job that must refuse
benchmark prompts:

    idx = BenchmarkIndex.load()          # the 120 LongBench-Write prompts
    idx.check("Write a 4000 words introduction about panda")   # -> "in_benchmark: exact ..."
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from dataset_builder.core.text import normalize_prompt

BENCHMARK = Path(__file__).parent / "data" / "longbench_write" / "longbench_write.jsonl"
_TOKEN = re.compile(r"[\u3400-\u9fff]|[^\W_]+")


def tokens(text: str) -> list[str]:
    """Words and single CJK characters of the normalized text (punctuation dropped)."""
    return _TOKEN.findall(normalize_prompt(text))


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    t = tokens(text)
    return {tuple(t[i:i + n]) for i in range(len(t) - n + 1)}


@dataclass
class BenchmarkIndex:
    """The benchmark's normalized prompts and their n-grams, for `check`."""
    n: int = 13
    exact: dict[str, int] = field(default_factory=dict)     # normalized prompt -> index
    grams: dict[tuple, int] = field(default_factory=dict)   # n-gram -> first prompt index

    @classmethod
    def load(cls, path: str | Path = BENCHMARK, n: int = 13) -> BenchmarkIndex:
        prompts = [json.loads(line)["prompt"] for line in Path(path).read_text("utf-8").splitlines()
                   if line.strip()]
        idx = cls(n=n)
        for i, p in enumerate(prompts):
            idx.exact.setdefault(normalize_prompt(p), i)
            for g in ngrams(p, n):
                idx.grams.setdefault(g, i)
        return idx

    def check(self, prompt: str) -> str | None:
        """None if `prompt` is clean, else the reason (which benchmark prompt, which n-gram)."""
        hit = self.exact.get(normalize_prompt(prompt))
        if hit is not None:
            return f"in_benchmark: exact match of LongBench-Write prompt {hit}"
        for g in ngrams(prompt, self.n):
            if g in self.grams:
                return (f"benchmark_overlap: shares a {self.n}-gram with LongBench-Write prompt "
                        f"{self.grams[g]} ({' '.join(g)[:60]!r})")
        return None
