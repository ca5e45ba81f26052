"""Curation: generation records -> LongWriter-6k shards on object storage, with a report.

Stages (Ray Data, `Dataset -> Dataset`; the load, clean and dedup stages and the work table
live in stages.py, their per-row logic is pure and lives in validate.py, filters.py,
postprocess.py, minhash.py and dedup.py (which also decides the duplicates); this module is the
driver):
    load      one task per committed input part: decode defensively, `validate` every row
    clean     `postprocess.clean` the paragraphs, then the quality `FilterChain`
    dedup     whole-dataset: keys and MinHash signatures on workers, clustering on the driver
              (`dedup.decide_duplicates`)
    write     kept rows sorted by id into `rows_per_shard` shards, rejects to `_rejects/`
A dropped row is never removed: it carries (stage, reason, detail) to the end, so the funnel is
exact by construction (in = out + rejected). Outputs carry the input's fingerprint, the
config hash and the code version; a rerun with all three unchanged is skipped.

    from dataset_builder.curate.config import CurateConfig
    from dataset_builder.curate.pipeline import run_curation
    stats = run_curation(CurateConfig(input="s3://b/run/generations", output="s3://b/run/lw6k"))
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dataset_builder.core import config, progress, storage
from dataset_builder.core.cards import write_card
from dataset_builder.core.config import ConfigError, config_hash, to_dict
from dataset_builder.core.storage import StorageConfig, save_resolved_config
from dataset_builder.curate import report, shards
from dataset_builder.curate.card import dataset_card
from dataset_builder.curate.config import CurateConfig
from dataset_builder.curate.stages import (
    SUMMARY_COLUMNS,
    WORK,
    _alive,
    clean_stage,
    collect,
    dedup_stage,
    load_stage,
    signal_extremes,
    signals_stage,
)
from dataset_builder.llm.stage import engines_up

log = logging.getLogger(__name__)

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


def _identity(cfg: CurateConfig) -> tuple[dict, dict]:
    """(input manifest, what identifies a result), once input and output are checked usable."""
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
             "config_hash": _curation_hash(cfg), "code_version": code_version(),
             "backend": _backend(manifest)}
    if ident["backend"] == "instant":
        log.warning("%s was written by the instant engine: stand-in text, not a model's; "
                    "training refuses it unless allow_instant_data is set", cfg.input)
    return manifest, ident


def _backend(manifest: dict) -> str:
    """The engine backend that wrote a generation dataset (older manifests name it only in
    their config)."""
    return manifest.get("backend") or ((manifest.get("config") or {}).get("engine") or {}
                                       ).get("backend") or "unknown"


def _funnel(ds, dedup_stats: dict, ident: dict, output: str) -> tuple[dict, pl.DataFrame]:
    """(stats, the per-row summary they come from); a funnel that does not add up is refused."""
    summary = collect(ds.select_columns(SUMMARY_COLUMNS))
    frame = pl.from_arrow(summary) if summary is not None else pl.from_arrow(
        pa.schema([WORK.field(n) for n in SUMMARY_COLUMNS]).empty_table())
    stats = {**ident, "output": output, **report.build_stats(frame, dedup_stats)}
    if not stats["funnel"]["balanced"]:   # cannot happen by construction; never publish it
        raise RuntimeError(f"curation funnel does not add up: {stats['funnel']}")
    return stats, frame


def _publish(cfg: CurateConfig, ds, stats: dict, frame: pl.DataFrame, ident: dict,
             t0: float, input_manifest: dict) -> None:
    """Shards, rejects, report, stats and config, then the commit; `stats` gains files, time."""
    st = cfg.storage
    extra = {**ident, "config": to_dict(cfg), "schema": shards.LONGWRITER.names}
    kept = ds.map_batches(_alive, batch_format="pyarrow")
    rejected = ds.select_columns(["id", "row_key", *shards.REJECTS.names[1:]]).map_batches(
        lambda b: b.filter(pc.is_valid(b["stage"])), batch_format="pyarrow")
    writer, files = shards.write_shards(cfg.output, _sorted_batches(
        kept, ["id"], cfg.rows_per_shard, shards.longwriter_table), st, extra)
    shards.write_rejects(cfg.output, _sorted_batches(
        rejected, ["id", "row_key"], 100_000, shards.reject_table), st, extra)
    stats["files"] = files
    stats["wall_seconds"] = round(time.time() - t0, 2)
    report.write_report(cfg.output, stats, frame, st)
    write_card(cfg.output, *dataset_card(cfg.license, stats, input_manifest, files), st)
    storage.write_json(storage.join(cfg.output, shards.STATS), stats, st)
    save_resolved_config(cfg, cfg.output, st)
    writer.commit(stats_file=shards.STATS)   # the commit point: shards become visible here
    shards.remove_orphans(cfg.output, st)


def run_curation(cfg: CurateConfig) -> dict:
    """Curate `cfg.input` into `cfg.output`; returns the stats (also in `_stats.json`).

    Idempotent: if `cfg.output` already holds a committed result for the same input, config and
    code, nothing is recomputed and the saved stats are returned with `skipped: true`.
    """
    import ray

    t0 = time.time()
    st = cfg.storage
    manifest, ident = _identity(cfg)
    previous = storage.load_manifest(cfg.output, st)
    stats_uri = storage.join(cfg.output, shards.STATS)
    if previous and all(previous.get(k) == v for k, v in ident.items()) and \
            storage.exists(stats_uri, st):
        return {**storage.read_json(stats_uri, st), "skipped": True}

    storage.reset_dataset(cfg.output, st)
    parts = [{"part": f["path"], "rows": int(f.get("rows") or 0)} for f in manifest["files"]]
    ds = ray.data.from_items(parts or [{"part": "", "rows": 0}],
                             override_num_blocks=max(1, len(parts)))
    if not parts:
        ds = ds.limit(0)
    n_rows = sum(p["rows"] for p in parts)

    def line(c: dict, g: dict, active_s: float) -> str:
        done = c.get("rows_filtered", 0)
        text = (f"rows {int(done)}/{n_rows} filtered, {int(c.get('rows_rejected', 0))} "
                f"rejected (dedup follows) | ETA {progress.eta(n_rows - done, done, active_s)}")
        if cfg.signals.enabled:
            text += f" | signals: {int(c.get('signals_ok', 0))} rows scored"
        return text
    with progress.Console("curate", cfg.progress, cfg.progress_interval_s, line) as con:
        ds = clean_stage(load_stage(ds, cfg), cfg, con.board).materialize()
        ds, dedup_stats = dedup_stage(ds, cfg.dedup)
        if cfg.signals.enabled:
            t_sig = time.time()
            with engines_up(cfg.signals.engine) as up_key:
                ds = signals_stage(ds, cfg.signals, up_key, con.board)
            t_sig = time.time() - t_sig
        stats, frame = _funnel(ds, dedup_stats, ident, cfg.output)
        if cfg.signals.enabled:   # its wall time includes the reference engine's start
            stats["signals"].update(signal_extremes(ds), seconds=round(t_sig, 1))
        _publish(cfg, ds, stats, frame, ident, t0, manifest)
    f = stats["funnel"]
    con.final(f"rows {f['rows_in']} in, {f['rows_out']} kept, {f['rejected']} rejected")
    return stats
