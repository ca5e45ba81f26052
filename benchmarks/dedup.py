"""Near-duplicate detection: our vectorized MinHash + LSH against datasketch, in one run.

    python benchmarks/dedup.py                          # 20,000 documents (default)
    python benchmarks/dedup.py --docs 50000 --json out/benchmarks/dedup.json

Corpus (deterministic for a --seed): documents of 500-1,500 Zipf-distributed words from a
synthetic vocabulary. Planted near-duplicates: copies of a base document with 0.5-2% of the
tokens substituted, deleted or inserted (true 5-shingle Jaccard about 0.8-0.97); families of
2-4. Hard negatives: documents sharing a long passage (40-60%) with another one (Jaccard about
0.25-0.45), which are not duplicates. Ground truth: the planted families.

Both sides use the same parameters (dataset_builder.curate.dedup.MinHashConfig defaults):
lowercased word tokens, 5-token shingles, 128 permutations, 32 bands x 4 rows, candidates kept
when the estimated Jaccard is >= 0.7, union-find clusters. datasketch: MinHash.bulk (one
permutation set, update_batch), MinHashLSH insert + query, single process. Ours: MinHasher +
near_duplicates in this process (polars' string kernels may use every core for tokenizing).
Recall and precision are pairwise over clusters (pairs in one cluster vs pairs in one family).
Prints a table, then one JSON line (also written to --json).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset_builder.curate.minhash import (
    TOKEN_PATTERN,
    MinHashConfig,
    MinHasher,
    components,
    near_duplicates,
)


def make_corpus(n_docs: int, seed: int, dup_frac: float, neg_frac: float
                ) -> tuple[list[str], np.ndarray, list[tuple[int, int]]]:
    """(texts, family label per text, planted (base, copy) pairs); shuffled order."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, rng.integers(2, 11)))
                      for _ in range(50_000)])
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    p /= p.sum()
    n_copies = int(n_docs * dup_frac)
    n_base = n_docs - n_copies
    docs = [rng.choice(len(vocab), rng.integers(500, 1501), p=p) for _ in range(n_base)]
    # hard negatives: a long shared passage with another base document
    for i in rng.choice(n_base, int(n_base * neg_frac), replace=False):
        j = int(rng.integers(n_base))
        src, dst = docs[j], docs[i].copy()
        span = int(len(dst) * rng.uniform(0.4, 0.6))
        span = min(span, len(src))
        a, b = int(rng.integers(len(dst) - span + 1)), int(rng.integers(len(src) - span + 1))
        dst[a:a + span] = src[b:b + span]
        docs[i] = dst
    family = list(range(n_base))
    planted = []
    bases = rng.choice(n_base, n_copies, replace=True)
    for base in bases:
        d = docs[base]
        rate = rng.uniform(0.005, 0.02)
        u = rng.random(len(d))
        sub, dele = u < rate / 3, (u >= rate / 3) & (u < 2 * rate / 3)
        ins = (u >= 2 * rate / 3) & (u < rate)
        out = d.copy()
        out[sub] = rng.integers(len(vocab), size=int(sub.sum()))
        reps = np.where(dele, 0, 1) + ins               # deleted: 0 copies, insertion: 2
        last = np.cumsum(reps) - 1                      # position of each token's last copy
        out = np.repeat(out, reps)
        out[last[ins]] = rng.integers(len(vocab), size=int(ins.sum()))
        planted.append((int(base), len(docs)))
        docs.append(out)
        family.append(int(base))
    texts = [" ".join(vocab[d]) for d in docs]
    order = rng.permutation(len(texts))
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    return ([texts[i] for i in order], np.asarray(family)[order],
            [(int(where[a]), int(where[b])) for a, b in planted])


def pair_metrics(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, int]:
    """Pairwise (precision, recall, predicted pairs) of a clustering against the truth."""
    def pairs(labels: np.ndarray) -> int:
        counts = np.unique(labels, return_counts=True, axis=0)[1].astype(np.int64)
        return int((counts * (counts - 1) // 2).sum())
    tp = pairs(np.stack([pred, truth], axis=1))
    n_pred, n_true = pairs(pred), pairs(truth)
    return (tp / n_pred if n_pred else 1.0), (tp / n_true if n_true else 1.0), n_pred


def run_ours(texts: list[str], cfg: MinHashConfig) -> np.ndarray:
    return near_duplicates(MinHasher(cfg).signatures(texts), cfg).labels


def run_datasketch(texts: list[str], cfg: MinHashConfig) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH
    tok = re.compile(TOKEN_PATTERN)
    k = cfg.shingle_size

    def shingles(text):
        t = tok.findall(text.lower())
        return [" ".join(t[i:i + k]).encode() for i in range(max(len(t) - k + 1, 1))]

    mhs = MinHash.generator((shingles(t) for t in texts), num_perm=cfg.num_perm, seed=cfg.seed)
    lsh = MinHashLSH(num_perm=cfg.num_perm, params=(cfg.bands, cfg.rows))
    sketches = []
    for i, m in enumerate(mhs):
        lsh.insert(i, m)
        sketches.append(m)
    pairs = [(i, j) for i, m in enumerate(sketches) for j in lsh.query(m)
             if j > i and m.jaccard(sketches[j]) >= cfg.threshold]
    return components(len(texts), np.array(pairs, dtype=np.int64).reshape(-1, 2))


def true_jaccard(texts: list[str], pairs: list[tuple[int, int]], k: int) -> np.ndarray:
    def sh(t):
        w = t.split()
        return {" ".join(w[i:i + k]) for i in range(max(len(w) - k + 1, 1))}
    return np.array([len(sh(texts[a]) & sh(texts[b])) / len(sh(texts[a]) | sh(texts[b]))
                     for a, b in pairs])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20_000, help="documents in the corpus")
    ap.add_argument("--seed", type=int, default=0, help="corpus seed")
    ap.add_argument("--dup-frac", type=float, default=0.2, help="share of planted copies")
    ap.add_argument("--neg-frac", type=float, default=0.1, help="share of hard negatives")
    ap.add_argument("--json", default="out/benchmarks/dedup.json", help="where to write JSON")
    args = ap.parse_args(argv)
    cfg = MinHashConfig()

    t = time.perf_counter()
    texts, family, planted = make_corpus(args.docs, args.seed, args.dup_frac, args.neg_frac)
    gen_s = time.perf_counter() - t
    words = np.array([t.count(" ") + 1 for t in texts])
    sims = true_jaccard(texts, planted[:2000], cfg.shingle_size)

    run_ours(texts[:200], cfg)                   # warm up imports and polars' thread pool
    t = time.perf_counter()
    ours = run_ours(texts, cfg)
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    theirs = run_datasketch(texts, cfg)
    theirs_s = time.perf_counter() - t

    p_ours, r_ours, n_ours = pair_metrics(ours, family)
    p_ds, r_ds, n_ds = pair_metrics(theirs, family)
    p_agree, r_agree, _ = pair_metrics(ours, theirs)
    n = len(texts)
    result = {
        "documents": n, "ours_docs_per_s": round(n / ours_s, 1),
        "datasketch_docs_per_s": round(n / theirs_s, 1), "speedup": round(theirs_s / ours_s, 2),
        "recall": round(r_ours, 4), "precision": round(p_ours, 4),
        "datasketch_recall": round(r_ds, 4), "datasketch_precision": round(p_ds, 4),
        "agreement_with_datasketch": {"precision": round(p_agree, 4),
                                      "recall": round(r_agree, 4)},
        "ours_seconds": round(ours_s, 2), "datasketch_seconds": round(theirs_s, 2),
        "planted_copies": len(planted), "true_pairs": pair_metrics(family, family)[2],
        "planted_jaccard": {"min": round(float(sims.min()), 3),
                            "median": round(float(np.median(sims)), 3)},
        "words_per_doc_mean": round(float(words.mean()), 1),
        "params": {"shingle_size": cfg.shingle_size, "num_perm": cfg.num_perm,
                   "bands": cfg.bands, "rows": cfg.rows, "threshold": cfg.threshold},
        "seed": args.seed, "cpu_count": os.cpu_count(), "corpus_seconds": round(gen_s, 1),
    }
    print(f"near-duplicate detection: {n} documents ({words.mean():.0f} words on average), "
          f"{len(planted)} planted copies (true Jaccard to their base: min {sims.min():.2f}, "
          f"median {np.median(sims):.2f}), {result['true_pairs']} true pairs")
    print(f"params: {cfg.shingle_size}-token shingles, {cfg.num_perm} permutations, "
          f"{cfg.bands} bands x {cfg.rows} rows, verify estimated Jaccard >= {cfg.threshold}")
    print()
    print(f"| {'method':<32} | {'seconds':>8} | {'docs/s':>9} | {'recall':>7} | "
          f"{'precision':>9} | {'pairs':>7} |")
    print(f"|{'-' * 34}|{'-' * 10}|{'-' * 11}|{'-' * 9}|{'-' * 11}|{'-' * 9}|")
    for name, s, r, p, k in (("ours (numpy MinHash + LSH)", ours_s, r_ours, p_ours, n_ours),
                             ("datasketch MinHashLSH", theirs_s, r_ds, p_ds, n_ds)):
        print(f"| {name:<32} | {s:>8.2f} | {n / s:>9.0f} | {r:>7.4f} | {p:>9.4f} | {k:>7} |")
    print()
    print(f"speedup: {result['speedup']:.2f}x datasketch's single-process documents/s; ours vs "
          f"datasketch pairs: precision {p_agree:.4f}, recall {r_agree:.4f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
