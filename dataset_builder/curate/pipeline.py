"""Curation: generation records -> LongWriter-6k shards on object storage, with a report.

Stages (Ray Data, `Dataset -> Dataset`; per-row logic is pure and lives in filters.py,
postprocess.py, dedup.py):
    load      one task per committed input part: decode defensively, `validate` every row
    clean     `postprocess.clean` the paragraphs, then the quality `FilterChain`
    dedup     whole-dataset: keys and MinHash signatures on workers, clustering on the driver
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
import io
import json
import time
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataset_builder import config, storage
from dataset_builder.config import ConfigError, config_hash, field, to_dict
from dataset_builder.curate import report, shards
from dataset_builder.curate.dedup import (
    Clusters,
    MinHashConfig,
    MinHasher,
    PromptMinHashConfig,
    exact_duplicates,
    near_duplicates,
    text_key,
)
from dataset_builder.curate.filters import (
    FilterConfig,
    build_filters,
    encoding_problem,
    length_score,
    validate,
)
from dataset_builder.curate.postprocess import EDIT_KINDS, clean
from dataset_builder.records import PLAN_ITEM
from dataset_builder.storage import StorageConfig
from dataset_builder.text import count_words, detect_lang


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
# The work table: one row per input row, from load to write

EDITS = [(f"edit_{k}", pa.int64()) for k in EDIT_KINDS]
WORK = pa.schema([
    ("row_key", pa.string()),         # "<part>#<row>": unique per input row, even for bad ids
    ("id", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
    ("detail", pa.string()),          # stage/reason/detail null = kept so far
    ("prompt", pa.string()), ("paragraphs", pa.list_(pa.string())), ("response", pa.string()),
    ("source", pa.string()), ("lang", pa.string()), ("response_lang", pa.string()),
    ("required_words", pa.int64()), ("response_words", pa.int64()),
    ("length_score", pa.float64()), ("plan", pa.list_(PLAN_ITEM)), ("model", pa.string()),
    ("config_hash", pa.string()), ("layout", pa.string()),
    ("finish_reasons", pa.list_(pa.string())), *EDITS,
])
SUMMARY_COLUMNS = ["id", "stage", "reason", "lang", "required_words", "response_words",
                   "length_score", *(n for n, _ in EDITS)]


def _reject(row: dict, stage: str, reason: str) -> dict:
    category, _, detail = reason.partition(": ")
    return {**row, "stage": stage, "reason": category, "detail": detail or None}


def _binary_type(t: pa.DataType) -> pa.DataType:
    """`t` with every string replaced by binary: casting to it never validates UTF-8."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_binary_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _binary_type(f.type)) for f in t])
    if pa.types.is_dictionary(t):
        return _binary_type(t.value_type)
    return t


def _decode(v):
    if isinstance(v, bytes):   # invalid UTF-8 survives as lone surrogates; validate() rejects
        return v.decode("utf-8", "surrogateescape")
    if isinstance(v, list):
        return [_decode(x) for x in v]
    if isinstance(v, dict):
        return {k: _decode(x) for k, x in v.items()}
    return v


class _Unreadable:
    """Placeholder for a value whose column could not be converted at all."""


def table_rows(table: pa.Table) -> list[dict]:
    """Rows of an untrusted parquet part as plain Python values, never raising."""
    columns = {}
    for name in table.column_names:
        col = table[name]
        try:
            columns[name] = [_decode(v) for v in col.cast(_binary_type(col.type)).to_pylist()]
        except (pa.ArrowException, ValueError, TypeError):
            columns[name] = [_Unreadable()] * table.num_rows
    return [dict(zip(columns, values)) for values in zip(*columns.values())] if columns \
        else [{} for _ in range(table.num_rows)]


def load_part(part: str, expected_rows: int, input_uri: str, storage_cfg: StorageConfig | None,
              max_response_chars: int) -> list[dict]:
    """Validated work rows of one input part (every row, rejected ones with their reason)."""
    try:
        raw_rows = table_rows(pq.read_table(io.BytesIO(storage.read_bytes(
            storage.join(input_uri, part), storage_cfg))))
    except Exception as e:  # noqa: BLE001 - any unreadable part: each of its rows is a reject
        msg = f"unreadable_part: {type(e).__name__}: {str(e)[:200]}"
        return [_reject({"row_key": f"{part}#{i}", "id": f"{part}#{i}"}, "validate", msg)
                for i in range(expected_rows)]
    out = []
    for i, raw in enumerate(raw_rows):
        key = f"{part}#{i}"
        row, reason = validate(raw, max_response_chars)
        if row is None:
            rid = raw.get("id")
            ok_id = isinstance(rid, str) and rid.strip() and not encoding_problem(rid)
            out.append(_reject({"row_key": key, "id": rid if ok_id else key}, "validate",
                               reason))
            continue
        row["lang"] = row["lang"] if row.get("lang") in ("zh", "en") else detect_lang(
            row["prompt"])
        out.append({**row, "row_key": key})
    return out


def clean_and_filter(row: dict, filters) -> dict:
    """Post-process a validated row and run the quality filters on it (pure)."""
    if row.get("stage"):
        return row
    cleaned = clean(row["paragraphs"], row.get("plan"))
    if not cleaned.response.strip():
        return _reject(row, "filter", "empty_response: nothing left after post-processing")
    words = count_words(cleaned.response)
    req = row.get("required_words")
    row = {**row, "paragraphs": cleaned.paragraphs, "response": cleaned.response,
           "response_words": words, "response_lang": detect_lang(cleaned.response),
           "length_score": round(length_score(req, words), 2) if req else None,
           **{f"edit_{k}": v for k, v in cleaned.edits.items()}}
    keep, reason = filters(row)
    return row if keep else _reject(row, "filter", reason)


def _to_work(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{n: r.get(n) for n in WORK.names} for r in rows], schema=WORK)


# ---------------------------------------------------------------------------------------------
# Ray Data stages

def _load_batch(batch: pa.Table, input_uri, storage_cfg, max_response_chars) -> pa.Table:
    rows = []
    for part, n in zip(batch["part"].to_pylist(), batch["rows"].to_pylist()):
        rows += load_part(part, n or 0, input_uri, storage_cfg, max_response_chars)
    return _to_work(rows)


def _clean_batch(batch: pa.Table, filter_cfg: FilterConfig) -> pa.Table:
    chain = build_filters(filter_cfg)
    return _to_work([clean_and_filter(r, chain) for r in batch.to_pylist()])


def load_stage(ds, cfg: CurateConfig):
    """Dataset of {part, rows} -> work rows, validated (one task per part)."""
    return ds.map_batches(_load_batch, batch_size=1, batch_format="pyarrow", num_cpus=cfg.num_cpus,
                          fn_kwargs={"input_uri": cfg.input, "storage_cfg": cfg.storage,
                                     "max_response_chars": cfg.max_response_chars})


def clean_stage(ds, cfg: CurateConfig):
    return ds.map_batches(_clean_batch, batch_size=256, batch_format="pyarrow",
                          num_cpus=cfg.num_cpus, fn_kwargs={"filter_cfg": cfg.filters})


def _alive(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_null(batch["stage"]))


def _dedup_keys_batch(batch: pa.Table, cfg: DedupConfig) -> pa.Table:
    batch = _alive(batch)
    prompts, responses = batch["prompt"].to_pylist(), batch["response"].to_pylist()
    cols = {"row_key": batch["row_key"], "id": batch["id"],
            "prompt_key": pa.array([text_key(p) for p in prompts], pa.binary()),
            "response_key": pa.array([text_key(r) for r in responses], pa.binary())}
    for name, mh_cfg, texts in (("prompt_sig", cfg.prompt, prompts),
                                ("response_sig", cfg.response, responses)):
        sigs = MinHasher(mh_cfg).signatures(texts) if mh_cfg.enabled else None
        cols[name] = pa.array([s.tobytes() for s in sigs] if sigs is not None
                              else [None] * batch.num_rows, pa.binary())
    return pa.table(cols)


def _mark_batch(batch: pa.Table, drops: dict[str, tuple[str, str]]) -> pa.Table:
    hits = [drops.get(k) for k in batch["row_key"].to_pylist()]
    if not any(hits):
        return batch
    stage, reason, detail = (batch[c].to_pylist() for c in ("stage", "reason", "detail"))
    for i, hit in enumerate(hits):
        if hit:
            stage[i], reason[i], detail[i] = "dedup", hit[0], hit[1]
    for name, values in (("stage", stage), ("reason", reason), ("detail", detail)):
        batch = batch.set_column(batch.schema.get_field_index(name), name,
                                 pa.array(values, pa.string()))
    return batch


def dedup_stage(ds, cfg: DedupConfig):
    """(Dataset, cluster stats): duplicates marked with stage 'dedup' and the kept id."""
    keys = collect(ds.map_batches(_dedup_keys_batch, batch_format="pyarrow",
                                  fn_kwargs={"cfg": cfg}))
    drops, stats = decide_duplicates(keys, cfg)
    return ds.map_batches(_mark_batch, batch_format="pyarrow",
                          fn_kwargs={"drops": drops}).materialize(), stats


def collect(ds) -> pa.Table | None:
    import ray
    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    return pa.concat_tables(tables).combine_chunks() if tables else None


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
