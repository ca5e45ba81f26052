"""Duplicate removal, the decisions: exact keys (normalized text) and near duplicates (MinHash +
LSH, minhash.py), in passes over the rows that survived the previous ones. Pure numpy over the
gathered keys; `stages.dedup_stage` computes the keys on workers and calls `decide_duplicates`
on the driver."""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from dataset_builder.core.config import field
from dataset_builder.core.text import normalize_prompt
from dataset_builder.curate.minhash import (
    Clusters,
    MinHashConfig,
    PromptMinHashConfig,
    near_duplicates,
)


@dataclass
class DedupConfig:
    exact_prompt: bool = field(True, help="drop rows whose normalized prompt (NFKC, casefold, "
                               "single spaces) equals a lower id's")
    exact_response: bool = field(True, help="drop rows whose normalized response equals a "
                                 "lower id's")
    # Nested sections use dataclasses.field directly (ruff RUF009 knows it; help is metadata).
    response: MinHashConfig = dataclasses.field(
        default_factory=MinHashConfig,
        metadata={"help": "near-duplicate responses (MinHash + LSH)"})
    prompt: PromptMinHashConfig = dataclasses.field(
        default_factory=PromptMinHashConfig,
        metadata={"help": "near-duplicate prompts (MinHash + LSH)"})


def text_key(text: str | None) -> bytes:
    """Exact-duplicate key: sha1 of the normalized text (NFKC, casefold, single spaces)."""
    return hashlib.sha1(normalize_prompt(text or "").encode("utf-8")).digest()


def exact_duplicates(keys: list[bytes]) -> Clusters:
    """Documents with equal keys form a cluster; the first (lowest id) represents it."""
    n = len(keys)
    if n == 0:
        return Clusters(np.arange(0), np.empty((0, 2), np.int64), np.empty(0))
    arr = np.array(keys, dtype=object)
    _, first, inverse = np.unique(arr, return_index=True, return_inverse=True)
    labels = first[inverse].astype(np.int64)
    dup = np.flatnonzero(labels != np.arange(n))
    pairs = np.stack([labels[dup], dup], axis=1) if len(dup) else np.empty((0, 2), np.int64)
    return Clusters(labels, pairs, np.ones(len(pairs)))


def _cluster_stats(c: Clusters) -> dict:
    sizes = c.sizes()
    hist = dict(sorted((int(k), int(v)) for k, v in zip(*np.unique(sizes, return_counts=True))))
    return {"clusters": len(sizes), "rows_in_clusters": int(sizes.sum()),
            "dropped": int(c.duplicate.sum()), "max_size": int(sizes.max()) if len(sizes) else 0,
            "size_histogram": {str(k): v for k, v in hist.items()}}


def _by_id(keys: pa.Table) -> pa.Table:
    """Rows by (id, response key), so that a cluster's representative is its lowest id."""
    rkeys = keys["response_key"].to_pylist()
    ids0 = keys["id"].to_pylist()
    return keys.take(pa.array(sorted(range(len(ids0)), key=lambda i: (ids0[i], rkeys[i]))))


def _passes(keys: pa.Table, cfg: DedupConfig
            ) -> list[tuple[str, Callable[[np.ndarray], Clusters], np.ndarray | None]]:
    """The enabled passes in order: (reason, rows -> clusters, signatures if near-duplicate)."""
    ids = keys["id"].to_pylist()
    cols = {n: keys[n].to_pylist() for n in ("prompt_key", "response_key")}
    passes = [("duplicate_id", lambda idx: exact_duplicates([ids[i].encode() for i in idx]),
               None)]
    if cfg.exact_prompt:
        passes.append(("exact_duplicate_prompt",
                       lambda idx: exact_duplicates([cols["prompt_key"][i] for i in idx]), None))
    if cfg.exact_response:
        passes.append(("exact_duplicate_response",
                       lambda idx: exact_duplicates([cols["response_key"][i] for i in idx]),
                       None))
    for name, col, mh_cfg in (("near_duplicate_response", "response_sig", cfg.response),
                              ("near_duplicate_prompt", "prompt_sig", cfg.prompt)):
        if mh_cfg.enabled:
            sig = np.frombuffer(b"".join(keys[col].to_pylist()), dtype=np.uint32
                                ).reshape(keys.num_rows, mh_cfg.num_perm)
            passes.append((name, lambda idx, s=sig, m=mh_cfg: near_duplicates(s[idx], m), sig))
    return passes


def decide_duplicates(keys: pa.Table | None, cfg: DedupConfig
                      ) -> tuple[dict[str, tuple[str, str]], dict]:
    """{row_key: (reason, detail)} for every duplicate, and per-pass cluster stats.

    Passes run in order on the rows that survived the previous ones: duplicate id, exact
    prompt, exact response, near-duplicate response, near-duplicate prompt. Rows are ordered
    by (id, response key), so the representative of each cluster is its lowest id.
    """
    if keys is None or keys.num_rows == 0:
        return {}, {}
    keys = _by_id(keys)
    ids, row_keys = keys["id"].to_pylist(), keys["row_key"].to_pylist()
    alive = np.ones(len(ids), dtype=bool)
    drops, stats = {}, {}
    for reason, run, sig in _passes(keys, cfg):
        idx = np.flatnonzero(alive)
        clusters = run(idx)
        stats[reason] = _cluster_stats(clusters)
        sizes = np.bincount(clusters.labels, minlength=len(idx))
        for k in np.flatnonzero(clusters.duplicate):
            rep = clusters.labels[k]
            detail = f"of {ids[idx[rep]]} (cluster of {sizes[rep]}"
            if sig is not None:
                m = sig[[idx[k], idx[rep]]]
                detail += f", estimated Jaccard {float((m[0] == m[1]).mean()):.2f}"
            drops[row_keys[idx[k]]] = (reason, detail + ")")
            alive[idx[k]] = False
    return drops, stats
