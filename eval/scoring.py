"""LongBench-Write scoring as published (see the benchmark's NOTICE), as pure functions.

- S_l = 100 * max(0, 1 - (l'/l - 1)/3) if l' > l, else 100 * max(0, 1 - (l/l' - 1)/2),
  l = required length, l' = produced length; an empty output (l' = 0) scores 0.
- S_q: each of six dimensions rated 1..5 maps to (score - 1) * 25; S_q is their mean.
- S = (S_l + S_q) / 2, where S_l averages over every generated response and S_q over every
  judged one (the denominators are reported next to the numbers, never hidden).

No Ray, no I/O: everything here is testable on hand-computed cases.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from dataset_builder.core.text import length_score  # noqa: F401  (S_l lives with count_words)

DIMENSIONS = ("Relevance", "Accuracy", "Coherence", "Clarity", "Breadth and Depth",
              "Reading Experience")

# Required-length buckets of the paper: [0,500), [500,2k), [2k,4k), [4k,20k] (last one closed).
BUCKETS = (("[0,500)", 0, 500, False), ("[500,2k)", 500, 2000, False),
           ("[2k,4k)", 2000, 4000, False), ("[4k,20k]", 4000, 20000, True))
OVER_20K = "(20k,inf)"  # only custom data reaches it; kept as its own bucket, never dropped


def dimension_score(rating: float) -> float:
    """One dimension's 1..5 rating on the 0..100 scale: (rating - 1) * 25."""
    if isinstance(rating, bool) or not (1 <= rating <= 5):
        raise ValueError(f"rating must be in [1, 5], got {rating!r}")
    return (float(rating) - 1.0) * 25.0


def quality_score(ratings: dict) -> float:
    """S_q of one judgement: the mean over the six dimensions of (rating - 1) * 25."""
    missing = [d for d in DIMENSIONS if d not in ratings]
    if missing:
        raise ValueError(f"missing dimensions: {missing}")
    return sum(dimension_score(ratings[d]) for d in DIMENSIONS) / len(DIMENSIONS)


def mean_ratings(judgements: Sequence[dict]) -> dict:
    """Per-dimension mean over replicate judgements of one response (k samples)."""
    if not judgements:
        raise ValueError("no judgements to average")
    return {d: sum(float(j[d]) for j in judgements) / len(judgements) for d in DIMENSIONS}


def length_bucket(required: float) -> str:
    """The paper's required-length bucket; 20000 belongs to the last (closed) bucket."""
    for name, lo, hi, closed in BUCKETS:
        if lo <= required < hi or (closed and required == hi):
            return name
    if required > BUCKETS[-1][2]:
        return OVER_20K
    raise ValueError(f"required length must be >= 0, got {required!r}")


def bootstrap_ci(values: Sequence[float], n_resamples: int = 1000, alpha: float = 0.05,
                 seed: int = 0, stat: Callable = np.mean) -> tuple[float, float] | None:
    """Percentile bootstrap CI of `stat` over `values`; None when there are no values."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None
    if x.size == 1 or n_resamples <= 0:
        v = float(stat(x))
        return (v, v)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    stats = np.array([stat(x[i]) for i in idx]) if stat is not np.mean else x[idx].mean(axis=1)
    return (float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2)))


def overall_score(s_l: Sequence[float], s_q: Sequence[float | None]) -> float | None:
    """S = (mean S_l + mean S_q) / 2; S_q entries that are None (not judged) are excluded from
    the S_q mean only. None when either side has no values."""
    sl = [v for v in s_l if v is not None]
    sq = [v for v in s_q if v is not None]
    if not sl or not sq:
        return None
    return (float(np.mean(sl)) + float(np.mean(sq))) / 2.0


def bootstrap_overall_ci(s_l: Sequence[float], s_q: Sequence[float | None],
                         n_resamples: int = 1000, alpha: float = 0.05,
                         seed: int = 0) -> tuple[float, float] | None:
    """Paired bootstrap of S: resample responses; S_l and S_q of a response move together."""
    sl = np.asarray(s_l, dtype=float)
    sq = np.asarray([np.nan if v is None else v for v in s_q], dtype=float)
    if sl.size == 0 or np.all(np.isnan(sq)):
        return None
    if sl.size == 1 or n_resamples <= 0:
        v = overall_score(list(sl), [None if math.isnan(q) else q for q in sq])
        return (v, v)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, sl.size, size=(n_resamples, sl.size))
    ml = sl[idx].mean(axis=1)
    q = sq[idx]
    counts = (~np.isnan(q)).sum(axis=1)
    mq = np.where(counts > 0, np.nansum(q, axis=1) / np.maximum(counts, 1), np.nan)
    s = ((ml + mq) / 2.0)[counts > 0]
    return (float(np.quantile(s, alpha / 2)), float(np.quantile(s, 1 - alpha / 2)))


def summarize(rows: Iterable[dict], n_resamples: int = 1000, seed: int = 0) -> dict:
    """S, S_l, S_q with 95% CIs and their denominators over `rows`, each {"s_l", "s_q"}.

    `s_l` is None for a response that failed to generate; `s_q` is None for one not judged.
    """
    rows = list(rows)
    sl = [r["s_l"] for r in rows if r["s_l"] is not None]
    sq_paired = [r["s_q"] for r in rows if r["s_l"] is not None]
    sq = [r["s_q"] for r in rows if r["s_q"] is not None]

    def mean(v):
        return float(np.mean(v)) if v else None

    return {
        "n": len(rows), "n_generated": len(sl), "n_judged": len(sq),
        "S": overall_score(sl, sq),
        "S_ci95": bootstrap_overall_ci(sl, sq_paired, n_resamples, seed=seed),
        "S_l": mean(sl), "S_l_ci95": bootstrap_ci(sl, n_resamples, seed=seed),
        "S_q": mean(sq), "S_q_ci95": bootstrap_ci(sq, n_resamples, seed=seed),
    }


def group_summaries(rows: Sequence[dict], key: str, n_resamples: int = 1000,
                    seed: int = 0, order: Sequence[str] | None = None) -> dict:
    """`summarize` per value of `rows[i][key]` (bucket, lang, type), in `order` when given."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r[key]), []).append(r)
    names = [g for g in (order or []) if g in groups] + sorted(set(groups) - set(order or []))
    return {g: summarize(groups[g], n_resamples, seed) for g in names}
