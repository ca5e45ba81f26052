"""S_l, S_q, buckets and bootstrap CIs on hand-computed cases (no Ray, no model)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from eval import scoring
from eval.scoring import (
    DIMENSIONS,
    bootstrap_ci,
    bootstrap_overall_ci,
    length_bucket,
    length_score,
    overall_score,
    quality_score,
    summarize,
)


def published_score(x, y):
    """The published eval_length.py formula, verbatim in meaning (x required, y produced)."""
    if y > x:
        return 100 * max(0, 1. - (y / x - 1) / 3)
    return 100 * max(0, 1. - (x / y - 1) / 2)


@pytest.mark.parametrize("required, produced, expected", [
    (1000, 1000, 100.0),
    (1000, 2000, 100 * (1 - 1 / 3)),        # twice too long: 66.67
    (1000, 4000, 0.0),                       # four times too long: exactly 0
    (1000, 7000, 0.0),                       # clipped at 0, never negative
    (1000, 500, 50.0),                       # half the length: 1 - (2 - 1) / 2
    (1000, 333, 100 * max(0, 1 - (1000 / 333 - 1) / 2)),  # 3x too short: ~0
    (1000, 250, 0.0),                        # a quarter: 1 - 3/2 < 0 -> 0
    (300, 400, 100 * (1 - 1 / 9)),           # 88.89: (4/3 - 1) / 3 = 1/9
    (400, 300, 100 * (1 - 1 / 6)),           # 83.33: (4/3 - 1) / 2 = 1/6
    (20000, 10000, 50.0),
    (100, 101, 100 * (1 - 0.01 / 3)),
])
def test_length_score_hand_computed(required, produced, expected):
    assert length_score(required, produced) == pytest.approx(expected, abs=1e-9)


def test_length_score_empty_output_is_zero_without_error():
    assert length_score(1000, 0) == 0.0
    assert length_score(1, 0) == 0.0


def test_length_score_matches_published_formula():
    rng = random.Random(0)
    for _ in range(2000):
        x, y = rng.randint(1, 30000), rng.randint(1, 60000)
        assert length_score(x, y) == pytest.approx(published_score(x, y), abs=1e-9)


def test_length_score_is_asymmetric_as_published():
    # Too long by 2x loses 1/3; too short by 2x loses 1/2.
    assert length_score(1000, 2000) > length_score(1000, 500)


@pytest.mark.parametrize("required, produced", [(0, 10), (-5, 10), (100, -1), (True, 10)])
def test_length_score_rejects_invalid_input(required, produced):
    with pytest.raises(ValueError):
        length_score(required, produced)


@pytest.mark.parametrize("required, bucket", [
    (0, "[0,500)"), (100, "[0,500)"), (499, "[0,500)"),
    (500, "[500,2k)"), (1999, "[500,2k)"),
    (2000, "[2k,4k)"), (3999, "[2k,4k)"),
    (4000, "[4k,20k]"), (10000, "[4k,20k]"), (19999, "[4k,20k]"),
    (20000, "[4k,20k]"),                  # the last bucket is closed
    (20001, scoring.OVER_20K), (30000, scoring.OVER_20K),
])
def test_length_bucket_edges(required, bucket):
    assert length_bucket(required) == bucket


def test_length_bucket_rejects_negative():
    with pytest.raises(ValueError):
        length_bucket(-1)


def test_quality_score_mapping():
    assert quality_score({d: 5 for d in DIMENSIONS}) == 100.0
    assert quality_score({d: 1 for d in DIMENSIONS}) == 0.0
    assert quality_score({d: 3 for d in DIMENSIONS}) == 50.0
    mixed = dict(zip(DIMENSIONS, [5, 4, 3, 2, 1, 3]))   # (4+3+2+1+0+2)*25/6 = 50
    assert quality_score(mixed) == pytest.approx(50.0)
    skew = dict(zip(DIMENSIONS, [5, 5, 5, 5, 5, 4]))    # (5*4 + 3) * 25 / 6
    assert quality_score(skew) == pytest.approx(23 * 25 / 6)


def test_quality_score_rejects_missing_or_out_of_range():
    partial = {d: 3 for d in DIMENSIONS[:-1]}
    with pytest.raises(ValueError, match="missing"):
        quality_score(partial)
    with pytest.raises(ValueError):
        quality_score({**{d: 3 for d in DIMENSIONS}, "Clarity": 6})
    with pytest.raises(ValueError):
        quality_score({**{d: 3 for d in DIMENSIONS}, "Clarity": 0})


def test_per_sample_mean_equals_published_dimension_first_aggregate():
    # Published: per-dimension mean over responses, then (m - 1) * 25, then mean over dims.
    rng = random.Random(1)
    judged = [{d: rng.randint(1, 5) for d in DIMENSIONS} for _ in range(37)]
    published = np.mean([(np.mean([j[d] for j in judged]) - 1) * 25 for d in DIMENSIONS])
    ours = np.mean([quality_score(j) for j in judged])
    assert ours == pytest.approx(published, abs=1e-9)


def test_mean_ratings_over_replicates():
    a, b = {d: 4 for d in DIMENSIONS}, {d: 2 for d in DIMENSIONS}
    assert scoring.mean_ratings([a, b]) == {d: 3.0 for d in DIMENSIONS}


def test_bootstrap_ci_sanity():
    rng = np.random.default_rng(0)
    x = rng.normal(50, 10, size=2000)
    lo, hi = bootstrap_ci(x, n_resamples=2000, seed=0)
    assert lo < x.mean() < hi
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)   # normal-theory half width ~0.44
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    # A smaller sample gives a wider interval.
    lo_s, hi_s = bootstrap_ci(x[:50], n_resamples=2000, seed=0)
    assert hi_s - lo_s > hi - lo


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci([]) is None
    assert bootstrap_ci([42.0]) == (42.0, 42.0)
    assert bootstrap_ci([7.0] * 30) == (7.0, 7.0)
    assert bootstrap_ci([1, 2, 3, 50], seed=3) == bootstrap_ci([1, 2, 3, 50], seed=3)
    lo, hi = bootstrap_ci([0, 100] * 20, n_resamples=500, seed=1)
    assert 0 < lo < 50 < hi < 100


def test_overall_score_and_denominators():
    rows = [{"s_l": 100.0, "s_q": 50.0}, {"s_l": 50.0, "s_q": None},   # not judged
            {"s_l": None, "s_q": None},                                   # generation failed
            {"s_l": 0.0, "s_q": 100.0}]
    s = summarize(rows, n_resamples=200, seed=0)
    assert (s["n"], s["n_generated"], s["n_judged"]) == (4, 3, 2)
    assert s["S_l"] == pytest.approx(50.0)           # (100 + 50 + 0) / 3
    assert s["S_q"] == pytest.approx(75.0)           # (50 + 100) / 2
    assert s["S"] == pytest.approx(62.5)
    lo, hi = s["S_ci95"]
    assert lo <= s["S"] <= hi
    assert overall_score([10.0], [None]) is None
    assert bootstrap_overall_ci([10.0, 20.0], [None, None]) is None


def test_group_summaries_order_and_counts():
    rows = [{"bucket": "[4k,20k]", "s_l": 10.0, "s_q": 20.0},
            {"bucket": "[0,500)", "s_l": 30.0, "s_q": None},
            {"bucket": "[0,500)", "s_l": 50.0, "s_q": 40.0}]
    g = scoring.group_summaries(rows, "bucket", 100, 0, [b[0] for b in scoring.BUCKETS])
    assert list(g) == ["[0,500)", "[4k,20k]"]
    assert g["[0,500)"]["n"] == 2 and g["[0,500)"]["n_judged"] == 1
    assert g["[0,500)"]["S_l"] == pytest.approx(40.0)
