"""Exact and near-duplicate detection (numpy/polars; no Ray)."""
from __future__ import annotations

import random
import re

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash

from dataset_builder.core.config import ConfigError
from dataset_builder.curate.dedup import (
    DedupConfig,
    decide_duplicates,
    exact_duplicates,
    text_key,
)
from dataset_builder.curate.minhash import (
    EMPTY,
    MinHashConfig,
    MinHasher,
    components,
    lsh_candidates,
    near_duplicates,
    shingle_hashes,
    token_hashes,
)
from dataset_builder.curate.stages import _dedup_keys_batch

rng = random.Random(11)
VOCAB = [f"{a}{b}{c}" for a in "bdfgklmnprstvz" for b in "aeiou" for c in "nrstlm"]


def doc(n: int = 300) -> list[str]:
    return [rng.choice(VOCAB) for _ in range(n)]


def edited(tokens: list[str], rate: float) -> list[str]:
    return [rng.choice(VOCAB) if rng.random() < rate else t for t in tokens]


def shingles(tokens: list[str], k: int = 5) -> set[str]:
    return {" ".join(tokens[i:i + k]) for i in range(max(len(tokens) - k + 1, 1))}


def jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def test_tokens_cover_chinese_and_empty_docs():
    hashes, offsets = token_hashes(["Hello, World! it's", "中文文本", "", None])
    assert np.diff(offsets).tolist() == [4, 4, 0, 0]
    assert hashes[5] == hashes[6] and hashes[4] != hashes[5]   # 中 文 文 本: one per character
    again, _ = token_hashes(["hello world"])
    assert again.tolist() == hashes[:2].tolist()    # lowercased, stable


def test_shingle_counts_per_document():
    toks, off = token_hashes(["a b c d e f g", "a b", "", "a b c d e"])
    sh, sh_off = shingle_hashes(toks, off, 5)
    assert np.diff(sh_off).tolist() == [3, 1, 0, 1]
    assert len(sh) == 5


def test_signatures_deterministic_and_empty():
    mh = MinHasher(MinHashConfig())
    a = mh.signatures(["the same text here for sure", "", "the same text here for sure"])
    assert a.shape == (3, 128) and a.dtype == np.uint32
    assert (a[0] == a[2]).all() and (a[1] == EMPTY).all()
    other = MinHasher(MinHashConfig(seed=2)).signatures(["the same text here for sure"])
    assert not (other[0] == a[0]).all()


def test_estimates_agree_with_datasketch_and_truth():
    base = doc(400)
    pairs = [(base, edited(base, r)) for r in (0.0, 0.02, 0.05, 0.1, 0.2, 0.5)]
    mh = MinHasher(MinHashConfig(num_perm=256, bands=64, rows=4))
    for a, b in pairs:
        truth = jaccard(a, b)
        ours = mh.signatures([" ".join(a), " ".join(b)])
        est = float((ours[0] == ours[1]).mean())
        ms = []
        for toks in (a, b):
            m = MinHash(num_perm=256)
            m.update_batch([s.encode() for s in shingles(toks)])
            ms.append(m)
        ds = ms[0].jaccard(ms[1])
        assert abs(est - truth) < 0.1 and abs(ds - truth) < 0.1 and abs(est - ds) < 0.12, \
            (truth, est, ds)


def test_planted_near_duplicates_found_without_false_links():
    originals = [doc(rng.randint(200, 400)) for _ in range(300)]
    texts = [" ".join(d) for d in originals]
    planted = {}
    for i in range(0, 300, 10):                     # 30 near-duplicates, J ~ 0.8-0.95
        planted[len(texts)] = i
        texts.append(" ".join(edited(originals[i], rng.uniform(0.005, 0.03))))
    cfg = MinHashConfig()
    clusters = near_duplicates(MinHasher(cfg).signatures(texts), cfg)
    found = {j for j, i in planted.items() if clusters.labels[j] == clusters.labels[i]}
    assert len(found) >= 0.95 * len(planted)
    sizes = clusters.sizes()
    assert sizes.max() == 2 and sizes.sum() == 2 * len(found)   # nothing else linked
    assert (clusters.labels[list(planted)] == list(planted.values())).sum() == len(found)


def test_components_union_find_min_label():
    pairs = np.array([[3, 4], [4, 5], [1, 5], [7, 8]])
    assert components(10, pairs).tolist() == [0, 1, 2, 1, 1, 1, 6, 7, 7, 9]
    chain = np.stack([np.arange(999, 0, -1), np.arange(998, -1, -1)], axis=1)
    assert (components(1000, chain) == 0).all()
    assert components(3, np.empty((0, 2), np.int64)).tolist() == [0, 1, 2]


def test_giant_bucket_stays_linear_and_connected():
    sigs = np.tile(np.arange(128, dtype=np.uint32), (500, 1))
    pairs = lsh_candidates(sigs, 32, 4, max_bucket=8)
    assert len(pairs) < 500 * 8
    assert (components(500, pairs) == 0).all()


def test_exact_duplicates_first_is_representative():
    keys = [text_key(t) for t in ("A  b", "c", "a B", "C", "d")]
    c = exact_duplicates(keys)
    assert c.labels.tolist() == [0, 1, 0, 1, 4]
    assert c.duplicate.tolist() == [False, False, True, True, False]


def test_config_checks():
    with pytest.raises(ConfigError):
        MinHashConfig(num_perm=128, bands=16, rows=4)
    with pytest.raises(ConfigError):
        MinHashConfig(threshold=0)


def _keys(rows):
    table = pa.table({"row_key": [f"p#{i}" for i in range(len(rows))],
                      "id": [r[0] for r in rows], "prompt": [r[1] for r in rows],
                      "response": [r[2] for r in rows], "stage": pa.nulls(len(rows), pa.string())})
    return _dedup_keys_batch(table, DedupConfig())


def test_decisions_keep_lowest_id_whatever_the_order():
    base = doc(300)
    rows = [("b", "prompt one about rivers", " ".join(base)),
            ("a", "another prompt entirely", " ".join(edited(base, 0.01))),
            ("c", "PROMPT one  about rivers", " ".join(doc(300))),
            ("d", "a fourth prompt", " ".join(doc(300))),
            ("d", "a fifth prompt", " ".join(doc(300)))]
    drops, stats = decide_duplicates(_keys(rows), DedupConfig())
    by_id = {rows[int(k.split("#")[1])][0]: v[0] for k, v in drops.items()}
    assert by_id == {"b": "near_duplicate_response", "c": "exact_duplicate_prompt",
                     "d": "duplicate_id"}
    assert stats["near_duplicate_response"]["size_histogram"] == {"2": 1}
    shuffled = rows[::-1]
    drops2, _ = decide_duplicates(_keys(shuffled), DedupConfig())
    by_id2 = {shuffled[int(k.split("#")[1])][0]: v for k, v in drops2.items()}
    assert {k: v[0] for k, v in by_id2.items()} == by_id
    assert re.search(r"of a \(cluster of 2, estimated Jaccard 0\.\d\d\)",
                     by_id2["b"][1])
