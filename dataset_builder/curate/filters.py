"""Quality filters (datatrove style): each filter is a small pure callable
`filter(row) -> (keep, reason)`; `FilterChain` runs a list of them and counts rejects.

A reason is "category: detail" ("too_short: 1520 < 2000 words"); the category before the
colon is what the report's funnel groups by. A row reaches the filters after `validate`
(validate.py: types, encoding, size) and `postprocess.clean`, so a filter sees a well-typed row
with at least: prompt, response, paragraphs, response_words, required_words, finish_reasons.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np

from dataset_builder.core.config import field
from dataset_builder.core.text import count_words, detect_lang, length_score, refusal
from dataset_builder.curate.postprocess import split_paragraphs

_TOKEN = re.compile(r"[\u4e00-\u9fff]|[^\W_]+")


@dataclass
class FilterConfig:
    min_response_words: int = field(2000, help="drop responses shorter than this (words as "
                                    "count_words counts them); the paper's LongWriter-6k "
                                    "keeps 2,000 and up; 0 disables")
    min_length_score: float | None = field(
        50.0, help="drop rows whose length score S_l (LongBench-Write, 0-100) against "
        "required_words is below this; 50 = within about 0.5x to 2.5x of the required length; "
        "rows without required_words are not checked; null disables")
    truncation: Literal["last", "any", "off"] = field(
        "last", help="drop rows whose last write step ('last') or any write step ('any') "
        "ended on max_tokens (finish reason 'length'); 'off' disables")
    min_paragraph_words: int = field(10, help="drop rows with a write-step paragraph shorter "
                                     "than this after post-processing (empty or near-empty)")
    max_duplicate_paragraph_frac: float = field(
        0.1, help="drop rows where paragraphs repeating an earlier paragraph hold more than "
        "this fraction of the characters (Gopher-style; blocks of 5+ words only)")
    repetition_ngram: int = field(10, help="n of the n-gram repetition check (tokens)")
    max_repeated_ngram_frac: float = field(
        0.1, help="drop rows where more than this fraction of tokens lie in repeats of an "
        "earlier n-gram (Gopher uses 0.10 for 10-grams)")
    check_language: bool = field(True, help="drop rows whose response language (zh/en) "
                                 "differs from the instruction's")
    check_refusal: bool = field(True, help="drop refusals and apology boilerplate")


# ---------------------------------------------------------------------------------------------
# Quality filters

def repeated_ngram_fraction(tokens: list[str], n: int) -> float:
    """Fraction of tokens covered by n-grams that already occurred earlier in the text."""
    if len(tokens) < 2 * n:
        return 0.0
    vocab: dict[str, int] = {}
    ids = np.array([vocab.setdefault(t, len(vocab)) for t in tokens], dtype=np.uint64)
    key = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    for m in range(n):   # polynomial hash of each window, wrapping mod 2**64
        key = key * np.uint64(1_000_003) + ids[m:len(ids) - n + 1 + m] + np.uint64(1)
    _, first = np.unique(key, return_index=True)
    repeat = np.ones(len(key), dtype=bool)
    repeat[first] = False
    cover = np.zeros(len(ids) + 1, dtype=np.int64)   # difference array over token positions
    starts = np.flatnonzero(repeat)
    np.add.at(cover, starts, 1)
    np.add.at(cover, starts + n, -1)
    return float((np.cumsum(cover[:-1]) > 0).mean())


class Filter:
    """Base: `name` is the reason category; `__call__(row) -> (keep, reason)`."""
    name = "filter"

    def __call__(self, row: dict) -> tuple[bool, str]:
        raise NotImplementedError

    def reject(self, detail: str) -> tuple[bool, str]:
        return False, f"{self.name}: {detail}"


@dataclass
class Truncated(Filter):
    scope: str = "last"
    name = "truncated"

    def __call__(self, row):
        writes = (row.get("finish_reasons") or [])[1:]   # index 0 is the plan step
        hits = [i for i, r in enumerate(writes, 1) if r == "length"]
        if self.scope == "last":
            hits = [i for i in hits if i == len(writes)]
        if hits:
            return self.reject(f"write step {hits[0]} of {len(writes)} ended on max_tokens")
        return True, ""


@dataclass
class Refusal(Filter):
    head_chars: int = 300
    name = "refusal"

    def __call__(self, row):
        for para in row["paragraphs"]:
            hit = refusal(para, self.head_chars)
            if hit:
                return self.reject(repr(hit)[:80])
        return True, ""


@dataclass
class LanguageMismatch(Filter):
    name = "language_mismatch"

    def __call__(self, row):
        want, got = detect_lang(row["prompt"]), detect_lang(row["response"])
        return (True, "") if want == got else self.reject(f"instruction {want}, response {got}")


@dataclass
class EmptyParagraph(Filter):
    min_words: int = 10
    name = "empty_paragraph"

    def __call__(self, row):
        for i, para in enumerate(row["paragraphs"], 1):
            n = count_words(para)
            if n < self.min_words:
                return self.reject(f"paragraph {i} has {n} < {self.min_words} words")
        return True, ""


@dataclass
class DuplicateParagraphs(Filter):
    max_frac: float = 0.1
    min_block_words: int = 5
    name = "duplicate_paragraphs"

    def __call__(self, row):
        blocks = split_paragraphs(row["response"])
        seen, dup_chars = set(), 0
        for b in blocks:
            key = " ".join(b.casefold().split())
            if key in seen and count_words(b) >= self.min_block_words:
                dup_chars += len(b)
            seen.add(key)
        total = sum(map(len, blocks)) or 1
        frac = dup_chars / total
        if frac > self.max_frac:
            return self.reject(f"{frac:.2f} of characters in repeated paragraphs > {self.max_frac}")
        return True, ""


@dataclass
class Repetition(Filter):
    n: int = 10
    max_frac: float = 0.1
    name = "repetition"

    def __call__(self, row):
        frac = repeated_ngram_fraction(_TOKEN.findall(row["response"].lower()), self.n)
        if frac > self.max_frac:
            return self.reject(f"{frac:.2f} of tokens in repeated {self.n}-grams > {self.max_frac}")
        return True, ""


@dataclass
class MinWords(Filter):
    min_words: int = 2000
    name = "too_short"

    def __call__(self, row):
        n = row["response_words"]
        return (True, "") if n >= self.min_words else self.reject(
            f"{n} < {self.min_words} words")


@dataclass
class LengthAdherence(Filter):
    min_score: float = 50.0
    name = "length_adherence"

    def __call__(self, row):
        req = row.get("required_words")
        if not req:
            return True, ""
        s = length_score(req, row["response_words"])
        return (True, "") if s >= self.min_score else self.reject(
            f"S_l {s:.0f} < {self.min_score:g} ({row['response_words']} words for {req} required)")


class FilterChain:
    """Runs filters in order; the first that rejects names the reason. Counts rejects."""

    def __init__(self, filters: list[Filter]):
        self.filters = filters
        self.rejected: Counter[str] = Counter()
        self.seen = 0

    def __call__(self, row: dict) -> tuple[bool, str]:
        self.seen += 1
        for f in self.filters:
            keep, reason = f(row)
            if not keep:
                self.rejected[f.name] += 1
                return False, reason
        return True, ""


def build_filters(cfg: FilterConfig) -> FilterChain:
    """The configured filters, root causes first (a truncated or refused response is usually
    also short; the reason should say why)."""
    fs: list[Filter] = []
    if cfg.truncation != "off":
        fs.append(Truncated(cfg.truncation))
    if cfg.check_refusal:
        fs.append(Refusal())
    if cfg.check_language:
        fs.append(LanguageMismatch())
    if cfg.min_paragraph_words > 0:
        fs.append(EmptyParagraph(cfg.min_paragraph_words))
    fs.append(DuplicateParagraphs(cfg.max_duplicate_paragraph_frac))
    fs.append(Repetition(cfg.repetition_ngram, cfg.max_repeated_ngram_frac))
    if cfg.min_response_words > 0:
        fs.append(MinWords(cfg.min_response_words))
    if cfg.min_length_score is not None:
        fs.append(LengthAdherence(cfg.min_length_score))
    return FilterChain(fs)
