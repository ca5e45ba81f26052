"""Summaries of a distribution (word counts, scores), one shape for every report: curation's,
the pairs job's, the length sweep's."""
from __future__ import annotations

import polars as pl


def round_num(x, digits: int = 1):
    return None if x is None else round(float(x), digits)


def describe(values, digits: int = 1) -> dict:
    """count, mean, min, p10, median, p90, max of a column or list (nulls left out); min and
    max stay ints for integer data (word counts), else rounded like the rest (to `digits`:
    small measures such as relevance, a few hundredths, need more than one)."""
    col = pl.Series(values).drop_nulls()
    if col.len() == 0:
        return {"count": 0}

    def r(x):
        return round_num(x, digits)
    edge = int if col.dtype.is_integer() else r
    return {"count": col.len(), "mean": r(col.mean()), "min": edge(col.min()),
            "p10": r(col.quantile(0.1)), "median": r(col.median()),
            "p90": r(col.quantile(0.9)), "max": edge(col.max())}
