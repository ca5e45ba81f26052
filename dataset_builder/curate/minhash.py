"""Near-duplicate detection: MinHash signatures, LSH candidates, union-find clusters.

Pure numpy/polars functions over lists of texts; `dedup.py` runs the passes (exact and near)
and `stages.py` lifts them onto Ray Data (signatures per batch on workers, clustering of the
gathered signatures on the driver).

Why our own MinHash instead of datasketch's: datasketch hashes every shingle with sha1 in a
Python loop and updates one `MinHash` object per document, which caps it near 1,000 documents
of 500 words per second per core (benchmarks/dedup.py measures both in one run). Here the whole batch is tokenized and hashed by polars (Rust), shingles
are combined with numpy, and the permutations are one broadcast multiply-add per chunk plus a
segmented min (`np.minimum.reduceat`): no per-shingle Python. The permutation scheme is the
same as datasketch's default since 2.0 ("affine32": a 32-bit avalanche of the shingle hash,
then `a*h + b mod 2**32`), so Jaccard estimates agree statistically (tests check that);
signatures are not bit-identical because the base shingle hash differs.

Clusters: candidate pairs from LSH band collisions are verified with the Jaccard estimate of the
full signature, linked, and resolved with a vectorized union-find (union by smallest index,
pointer jumping). Callers order documents by id, so "smallest index" = the lowest id is the
representative kept from each cluster, the same on every run.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from dataset_builder.core.config import ConfigError, field

# A token is one CJK ideograph or a run of letters/digits (any script), lowercased: the same
# units `count_words` counts, so Chinese text (no spaces) shingles as well as English.
TOKEN_PATTERN = r"[\u4e00-\u9fff]|[^\W_]+"
EMPTY = np.uint32(0xFFFFFFFF)   # signature value of a document without shingles
_M64 = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio odd constant for combining hashes


@dataclass
class MinHashConfig:
    """Near-duplicate detection by MinHash + LSH.

    Defaults: 5-token shingles (the usual unit for LLM-corpus dedup: Gopher, RefinedWeb,
    datatrove) and 128 permutations, so one Jaccard estimate has a standard error of about
    0.04 at J = 0.7. The LSH bands are only a candidate generator; the decision is the full
    128-value estimate >= `threshold`. So the S-curve midpoint (1/bands)**(1/rows) = 0.42 for
    32 x 4 sits well below the 0.7 threshold: a pair at J = 0.7 becomes a candidate with
    p = 0.9998 (16 x 8 would give 0.70), and the extra candidates at J ~ 0.3-0.5 cost one
    vectorized comparison each and are rejected by the estimate.
    """
    enabled: bool = field(True, help="run this near-duplicate pass")
    shingle_size: int = field(5, help="tokens per shingle (a token = a word or one CJK "
                              "character); documents shorter than this are one shingle")
    num_perm: int = field(128, help="MinHash permutations (signature length); must equal "
                          "bands * rows")
    bands: int = field(32, help="LSH bands: two documents are candidates if any band matches")
    rows: int = field(4, help="signature values per LSH band")
    threshold: float = field(0.7, help="estimated Jaccard similarity of shingle sets at or "
                             "above which a candidate pair is a near-duplicate")
    seed: int = field(1, help="seed of the permutations (fixed: signatures must agree across "
                      "workers and runs)")

    def __post_init__(self):
        if self.bands * self.rows != self.num_perm:
            raise ConfigError(f"bands * rows must equal num_perm: {self.bands} * {self.rows} "
                             f"!= {self.num_perm}")
        if self.shingle_size < 1 or not 0.0 < self.threshold <= 1.0:
            raise ConfigError("shingle_size must be >= 1 and threshold in (0, 1]")


@dataclass
class PromptMinHashConfig(MinHashConfig):
    """Near-duplicate prompts: a prompt is tens of words, so shingles are 3 tokens (one
    changed word then touches 3 of ~30 shingles: J ~ 0.8, still linked at 0.7)."""
    shingle_size: int = field(3, help="tokens per shingle (a token = a word or one CJK "
                              "character); prompts shorter than this are one shingle")


# ---------------------------------------------------------------------------------------------
# Hashing helpers (uint64 arithmetic wraps, which is what we want)

def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: an avalanching bijection."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def token_hashes(texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash per token, flat; int64 offsets of each text's tokens, len N+1).

    polars' string hash is stable within one polars version on every machine, which is all
    we need: signatures are compared within one run, never stored across versions.
    """
    s = pl.Series("t", texts, dtype=pl.String).str.to_lowercase().str.extract_all(TOKEN_PATTERN)
    lens = s.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = s.list.eval(pl.element().hash(seed=0)).explode(empty_as_null=False,
                                                          keep_nulls=False)
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    return flat.to_numpy().astype(np.uint64, copy=False), offsets


def shingle_hashes(tokens: np.ndarray, offsets: np.ndarray, k: int) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """32-bit hash of every k-token shingle, flat, with per-document offsets.

    Shingle i of a document combines tokens i..i+k-1 (a polynomial in the token hashes, then
    an avalanche); a document shorter than k tokens is one shingle of all its tokens.
    """
    n_tok, lens = len(tokens), np.diff(offsets)
    padded = np.concatenate([tokens, np.zeros(k, dtype=np.uint64)])
    h = tokens.copy()
    for m in range(1, k):            # slices, no gathers: windows may run past a document ...
        h *= _M64
        h += padded[m:m + n_tok]
    start = np.repeat(offsets[:-1], lens)
    keep = np.arange(n_tok) - start <= np.repeat(lens - k, lens)   # ... but are dropped here
    short = np.flatnonzero((lens > 0) & (lens < k))
    for d in short:                  # rare: one shingle of the whole (short) document
        v = tokens[offsets[d]:offsets[d] + 1].copy()
        for t in tokens[offsets[d] + 1:offsets[d + 1]]:
            v = v * _M64 + t         # 1-element arrays wrap silently (scalars would warn)
        h[offsets[d]] = v[0]
        keep[offsets[d]] = True
    sh = (_fmix64(h[keep]) >> np.uint64(32)).astype(np.uint32)
    sh_offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(np.where(lens >= k, lens - k + 1, (lens > 0).astype(np.int64)), out=sh_offsets[1:])
    return sh, sh_offsets


class MinHasher:
    """Signatures for batches of texts under one fixed set of permutations."""

    def __init__(self, cfg: MinHashConfig, chunk_shingles: int = 1 << 12):
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        # a odd: x -> a*x + b mod 2**32 is then a bijection (a permutation of the hash space).
        self.a = (rng.integers(0, 1 << 32, cfg.num_perm, dtype=np.uint64) | 1).astype(np.uint32)
        self.b = rng.integers(0, 1 << 32, cfg.num_perm, dtype=np.uint64).astype(np.uint32)
        self.chunk = chunk_shingles   # 4k shingles x 128 perms x 4 B = 2 MiB: stays in cache

    def signatures(self, texts: list[str | None]) -> np.ndarray:
        """uint32 (N, num_perm); a document without tokens gets all EMPTY."""
        tokens, offsets = token_hashes(texts)
        sh, sh_off = shingle_hashes(tokens, offsets, self.cfg.shingle_size)
        return self.from_shingles(sh, sh_off)

    def from_shingles(self, sh: np.ndarray, sh_off: np.ndarray) -> np.ndarray:
        n, perm = len(sh_off) - 1, self.cfg.num_perm
        out = np.full((n, perm), EMPTY, dtype=np.uint32)
        a, b = self.a[:, None], self.b[:, None]
        scratch = np.empty((perm, self.chunk), dtype=np.uint32)
        d0 = 0
        while d0 < n:
            # the largest run of whole documents within the chunk budget (>= one document)
            d1 = int(np.searchsorted(sh_off, sh_off[d0] + self.chunk, side="right")) - 1
            d1 = min(max(d1, d0 + 1), n)
            lo, hi = int(sh_off[d0]), int(sh_off[d1])
            if hi > lo:
                # (perm, shingles) layout: the min runs along contiguous memory
                h = scratch[:, :hi - lo] if hi - lo <= self.chunk else np.empty(
                    (perm, hi - lo), dtype=np.uint32)
                np.multiply(a, sh[lo:hi], out=h)          # wraps mod 2**32
                np.add(h, b, out=h)
                starts = sh_off[d0:d1] - lo
                nonempty = np.diff(sh_off[d0:d1 + 1]) > 0
                out[d0:d1][nonempty] = np.minimum.reduceat(h, starts[nonempty], axis=1).T
            d0 = d1
        return out


# ---------------------------------------------------------------------------------------------
# LSH and clustering

def lsh_candidates(sigs: np.ndarray, bands: int, rows: int, max_bucket: int = 64) -> np.ndarray:
    """int64 (E, 2) unique pairs i < j that share at least one band.

    Inside a bucket, pairs are formed between documents at most `max_bucket` apart in sorted
    order (all pairs for ordinary buckets; a giant bucket, e.g. many identical boilerplate
    texts, stays linear instead of quadratic and is still connected through the chain).
    """
    n = len(sigs)
    valid = ~(sigs == EMPTY).all(axis=1)
    pairs = []
    for band in range(bands):
        cols = sigs[:, band * rows:(band + 1) * rows].astype(np.uint64)
        key = np.zeros(n, dtype=np.uint64)
        for c in range(rows):
            key = _fmix64((key ^ cols[:, c]) * _M64 + np.uint64(c + 1))
        idx = np.flatnonzero(valid)
        order = idx[np.argsort(key[idx], kind="stable")]
        sk = key[order]
        for d in range(1, min(max_bucket, len(order))):
            same = sk[d:] == sk[:-d]
            if not same.any():
                break
            pairs.append(np.stack([order[:-d][same], order[d:][same]], axis=1))
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    p = np.concatenate(pairs)
    p = np.sort(p, axis=1)
    code = np.unique(p[:, 0] * n + p[:, 1])
    return np.stack([code // n, code % n], axis=1).astype(np.int64)


def estimated_jaccard(sigs: np.ndarray, pairs: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """Fraction of equal signature values for each pair (the MinHash Jaccard estimate)."""
    out = np.empty(len(pairs), dtype=np.float64)
    for s in range(0, len(pairs), block):
        p = pairs[s:s + block]
        out[s:s + block] = (sigs[p[:, 0]] == sigs[p[:, 1]]).mean(axis=1)
    return out


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components as labels = the smallest index in each component.

    Vectorized union-find: every edge pulls both endpoints' roots to the smaller root
    (`np.minimum.at`), then pointer jumping compresses paths; repeat until every edge has
    both ends under one root. Iterations grow with log of the longest chain, not with edges.
    """
    parent = np.arange(n, dtype=np.int64)
    if len(pairs) == 0:
        return parent
    i, j = pairs[:, 0], pairs[:, 1]
    while True:
        ri, rj = parent[i], parent[j]
        if np.array_equal(ri, rj):
            return parent
        m = np.minimum(ri, rj)
        np.minimum.at(parent, ri, m)
        np.minimum.at(parent, rj, m)
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt


@dataclass
class Clusters:
    """Result of one dedup pass over N documents (ordered by id)."""
    labels: np.ndarray        # representative index per document
    pairs: np.ndarray         # linked pairs (i, j)
    similarity: np.ndarray    # estimated Jaccard per linked pair (1.0 for exact)

    @property
    def duplicate(self) -> np.ndarray:
        """True for every document that is not its cluster's representative."""
        return self.labels != np.arange(len(self.labels))

    def sizes(self) -> np.ndarray:
        """Sizes of clusters with more than one document."""
        counts = np.bincount(self.labels, minlength=len(self.labels))
        return counts[counts > 1]


def near_duplicates(sigs: np.ndarray, cfg: MinHashConfig) -> Clusters:
    pairs = lsh_candidates(sigs, cfg.bands, cfg.rows)
    sims = estimated_jaccard(sigs, pairs)
    keep = sims >= cfg.threshold
    pairs, sims = pairs[keep], sims[keep]
    return Clusters(components(len(sigs), pairs), pairs, sims)
