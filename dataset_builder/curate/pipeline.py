"""Curation: generation records -> LongWriter-6k shards on object storage, with a report.

Stages (Ray Data, `Dataset -> Dataset`; the load, clean and dedup stages and the work table
live in stages.py, their per-row logic is pure and lives in filters.py, postprocess.py,
dedup.py; this module holds the configs, the dedup decisions and the driver):
    load      one task per committed input part: decode defensively, `validate` every row
    clean     `postprocess.clean` the paragraphs, then the quality `FilterChain`
    dedup     whole-dataset: keys and MinHash signatures on workers, clustering on the driver
              (`decide_duplicates`, here)
    write     kept rows sorted by id into `rows_per_shard` shards, rejects to `_rejects/`
A dropped row is never removed: it carries (stage, reason, detail) to the end, so the funnel is
exact by construction (in = out + rejected). Outputs carry the input's fingerprint, the
config hash and the code version; a rerun with all three unchanged is skipped.

    from dataset_builder.curate.pipeline import CurateConfig, run_curation
    stats = run_curation(CurateConfig(input="s3://b/run/generations", output="s3://b/run/lw6k"))
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dataset_builder import config, storage
from dataset_builder.config import ConfigError, config_hash, field, to_dict
from dataset_builder.curate import report, shards
from dataset_builder.curate.dedup import (
    Clusters,
    MinHashConfig,
    PromptMinHashConfig,
    exact_duplicates,
    near_duplicates,
)
from dataset_builder.curate.filters import FilterConfig
from dataset_builder.curate.stages import (
    SUMMARY_COLUMNS,
    WORK,
    _alive,
    clean_stage,
    collect,
    dedup_stage,
    load_stage,
)
from dataset_builder.storage import StorageConfig


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


@dataclass
class CurateConfig:
    input: str = field(help="generation dataset directory (fsspec URI, e.g. "
                       "s3://bucket/run/generations): parquet parts + _manifest.json")
    output: str = field(help="curated LongWriter-6k dataset directory (fsspec URI)")
    storage: StorageConfig = dataclasses.field(
        default_factory=StorageConfig, metadata={"help": "object store settings"})
    filters: FilterConfig = dataclasses.field(
        default_factory=FilterConfig, metadata={"help": "quality filters"})
    dedup: DedupConfig = dataclasses.field(
        default_factory=DedupConfig, metadata={"help": "exact and near-duplicate removal"})
    rows_per_shard: int = field(1000, help="rows per output parquet shard (the last one may "
                                "be smaller)")
    max_response_chars: int = field(500_000, help="reject responses longer than this before "
                                    "parsing them (32k words is about 200k characters)")
    num_cpus: float = field(1.0, help="CPUs per Ray Data task of the per-row stages")

    def __post_init__(self):
        if self.rows_per_shard < 1:
            raise ConfigError("rows_per_shard must be >= 1")


# ---------------------------------------------------------------------------------------------
# Dedup decisions (driver; pure numpy over the gathered keys)

def _cluster_stats(c: Clusters) -> dict:
    sizes = c.sizes()
    hist = dict(sorted((int(k), int(v)) for k, v in zip(*np.unique(sizes, return_counts=True))))
    return {"clusters": len(sizes), "rows_in_clusters": int(sizes.sum()),
            "dropped": int(c.duplicate.sum()), "max_size": int(sizes.max()) if len(sizes) else 0,
            "size_histogram": {str(k): v for k, v in hist.items()}}


def decide_duplicates(keys: pa.Table | None, cfg: DedupConfig
                      ) -> tuple[dict[str, tuple[str, str]], dict]:
    """{row_key: (reason, detail)} for every duplicate, and per-pass cluster stats.

    Passes run in order on the rows that survived the previous ones: duplicate id, exact
    prompt, exact response, near-duplicate response, near-duplicate prompt. Rows are ordered
    by (id, response key), so the representative of each cluster is its lowest id.
    """
    if keys is None or keys.num_rows == 0:
        return {}, {}
    rkeys = keys["response_key"].to_pylist()
    ids0 = keys["id"].to_pylist()
    keys = keys.take(pa.array(sorted(range(len(ids0)), key=lambda i: (ids0[i], rkeys[i]))))
    ids, row_keys = keys["id"].to_pylist(), keys["row_key"].to_pylist()
    cols = {n: keys[n].to_pylist() for n in ("prompt_key", "response_key")}
    sigs = {}
    for name, mh_cfg in (("prompt_sig", cfg.prompt), ("response_sig", cfg.response)):
        if mh_cfg.enabled:
            sigs[name] = np.frombuffer(b"".join(keys[name].to_pylist()), dtype=np.uint32
                                       ).reshape(len(ids), mh_cfg.num_perm)
    alive = np.ones(len(ids), dtype=bool)
    drops, stats = {}, {}

    def sig_matrix(name, mh_cfg, idx):
        return sigs[name][idx]

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
            passes.append((name, lambda idx, c=col, m=mh_cfg: near_duplicates(
                sig_matrix(c, m, idx), m), (col, mh_cfg)))
    for reason, run, sig in passes:
        idx = np.flatnonzero(alive)
        clusters = run(idx)
        stats[reason] = _cluster_stats(clusters)
        sizes = np.bincount(clusters.labels, minlength=len(idx))
        for k in np.flatnonzero(clusters.duplicate):
            rep = clusters.labels[k]
            detail = f"of {ids[idx[rep]]} (cluster of {sizes[rep]}"
            if sig is not None:
                m = sig_matrix(sig[0], sig[1], [idx[k], idx[rep]])
                detail += f", estimated Jaccard {float((m[0] == m[1]).mean()):.2f}"
            drops[row_keys[idx[k]]] = (reason, detail + ")")
            alive[idx[k]] = False
    return drops, stats


# ---------------------------------------------------------------------------------------------
# Driver

def code_version() -> str:
    """This stage's source hash: a change of curation code invalidates old outputs."""
    return config.code_version("dataset_builder/curate")


def input_fingerprint(manifest: dict) -> str:
    files = [(f["path"], f.get("rows"), f.get("sha256")) for f in manifest.get("files", [])]
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]


def _curation_hash(cfg: CurateConfig) -> str:
    # the store's endpoint does not change what is produced
    return config_hash(dataclasses.replace(cfg, storage=StorageConfig()))


def _sorted_batches(ds, key: list[str], size: int, convert):
    if ds.count() == 0:
        return
    for batch in ds.sort(key).iter_batches(batch_size=size, batch_format="pyarrow"):
        yield convert(batch)


def run_curation(cfg: CurateConfig) -> dict:
    """Curate `cfg.input` into `cfg.output`; returns the stats (also in `_stats.json`).

    Idempotent: if `cfg.output` already holds a committed result for the same input, config and
    code, nothing is recomputed and the saved stats are returned with `skipped: true`.
    """
    import ray

    t0 = time.time()
    st = cfg.storage
    if cfg.input.rstrip("/") == cfg.output.rstrip("/"):
        raise ConfigError("output must differ from input (the output directory is rewritten)")
    storage.check_reachable(cfg.input, st, must_exist=True)
    storage.check_reachable(cfg.output, st)
    manifest = storage.load_manifest(cfg.input, st)
    if manifest is None:
        raise storage.StorageError(f"no committed generation dataset at {cfg.input} "
                                   f"(missing {storage.MANIFEST})")
    ident = {"input": cfg.input, "input_fingerprint": input_fingerprint(manifest),
             "config_hash": _curation_hash(cfg), "code_version": code_version()}
    previous = storage.load_manifest(cfg.output, st)
    stats_uri = storage.join(cfg.output, shards.STATS)
    if previous and all(previous.get(k) == v for k, v in ident.items()) and \
            storage.exists(stats_uri, st):
        return {**storage.read_json(stats_uri, st), "skipped": True}

    shards.reset(cfg.output, st)
    parts = [{"part": f["path"], "rows": int(f.get("rows") or 0)} for f in manifest["files"]]
    ds = ray.data.from_items(parts or [{"part": "", "rows": 0}],
                             override_num_blocks=max(1, len(parts)))
    if not parts:
        ds = ds.limit(0)
    ds = clean_stage(load_stage(ds, cfg), cfg).materialize()
    ds, dedup_stats = dedup_stage(ds, cfg.dedup)

    summary = collect(ds.select_columns(SUMMARY_COLUMNS))
    frame = pl.from_arrow(summary) if summary is not None else pl.from_arrow(
        pa.schema([WORK.field(n) for n in SUMMARY_COLUMNS]).empty_table())
    stats = {**ident, "output": cfg.output, **report.build_stats(frame, dedup_stats)}
    if not stats["funnel"]["balanced"]:   # cannot happen by construction; never publish it
        raise RuntimeError(f"curation funnel does not add up: {stats['funnel']}")

    extra = {**ident, "config": to_dict(cfg), "schema": shards.LONGWRITER.names}
    kept = ds.map_batches(_alive, batch_format="pyarrow")
    rejected = ds.select_columns(["id", "row_key", "stage", "reason", "detail"]).map_batches(
        lambda b: b.filter(pc.is_valid(b["stage"])), batch_format="pyarrow")
    writer, files = shards.write_shards(cfg.output, _sorted_batches(
        kept, ["id"], cfg.rows_per_shard, shards.longwriter_table), st, extra)
    shards.write_rejects(cfg.output, _sorted_batches(
        rejected, ["id", "row_key"], 100_000, shards.reject_table), st, extra)
    stats["files"] = files
    stats["wall_seconds"] = round(time.time() - t0, 2)
    report.write_report(cfg.output, stats, frame, st)
    storage.write_json(stats_uri, stats, st)
    from dataset_builder.config import save_resolved_config
    save_resolved_config(cfg, cfg.output, st)
    writer.commit(stats_file=shards.STATS)   # the commit point: shards become visible here
    shards.remove_orphans(cfg.output, st)
    return stats
