"""LongWriter-6k output: `messages` records, fixed-size parquet shards, `_rejects/`, `_stats.json`.

Layout of a curated dataset directory (DESIGN.md §5):
    part-00000.parquet ...   LongWriter-6k records, `rows_per_shard` rows each, sorted by id
    _manifest.json           files, rows, sha256, config, code version, input fingerprint
    _rejects/                a dataset of (id, stage, reason, detail): every dropped row
    _stats.json              the funnel and the report's numbers
Shards become visible only when `_manifest.json` lists them (DatasetWriter), and the main
manifest is committed last, so a crash anywhere leaves the previous state or nothing.
"""
from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from dataset_builder.core import storage
from dataset_builder.core.records import LONGWRITER, MESSAGE

REJECTS = pa.schema([("id", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
                     ("detail", pa.string()), ("perplexity", pa.float64()),
                     ("relevance", pa.float64())])
REJECTS_DIR = storage.REJECTS_DIR
STATS = "_stats.json"


def to_messages(prompt: str, response: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def longwriter_table(work: pa.Table) -> pa.Table:
    """Kept rows of the curation work table -> LongWriter-6k records (schema LONGWRITER)."""
    prompts, responses = work["prompt"].to_pylist(), work["response"].to_pylist()
    messages = pa.array([to_messages(p, r) for p, r in zip(prompts, responses)],
                        type=pa.list_(MESSAGE))
    cols = {name: messages if name == "messages" else work[name].cast(LONGWRITER.field(name).type)
            for name in LONGWRITER.names}
    return pa.table(cols, schema=LONGWRITER).combine_chunks()


def reject_table(work: pa.Table) -> pa.Table:
    return pa.table({n: work[n].cast(REJECTS.field(n).type) for n in REJECTS.names},
                    schema=REJECTS).combine_chunks()


def remove_orphans(uri: str, cfg: storage.StorageConfig | None) -> list[str]:
    """Delete parts and temporaries no manifest lists (left by a crash or a larger earlier
    run). Runs after the commit, so it never touches anything visible."""
    fs, path = storage.get_fs(uri, cfg)
    removed = []
    for sub in ("", REJECTS_DIR):
        base = f"{path}/{sub}".rstrip("/")
        manifest = storage.load_manifest(f"{uri.rstrip('/')}/{sub}".rstrip("/"), cfg) or {}
        listed = {f["path"] for f in manifest.get("files", [])}
        try:
            names = [p.rsplit("/", 1)[-1] for p in fs.ls(base, detail=False)]
        except FileNotFoundError:
            continue
        for name in names:
            if (name.startswith("part-") and name not in listed) or name.startswith("_tmp-"):
                fs.rm(f"{base}/{name}")
                removed.append(f"{sub}/{name}".lstrip("/"))
    return removed


def write_shards(uri: str, batches: Iterable[pa.Table], cfg: storage.StorageConfig | None,
                 extra: dict) -> tuple[storage.DatasetWriter, list[str]]:
    """Write each batch (already cut to rows_per_shard, sorted) as one part; not committed."""
    writer = storage.DatasetWriter(uri, cfg, extra)
    writer.write(LONGWRITER.empty_table())   # the schema, for a curation that keeps no row
    names = [writer.write(batch) for batch in batches]
    return writer, [n for n in names if n]


def write_rejects(uri: str, batches: Iterable[pa.Table], cfg: storage.StorageConfig | None,
                  extra: dict) -> dict:
    writer = storage.DatasetWriter(storage.join(uri, REJECTS_DIR), cfg, extra)
    writer.write(REJECTS.empty_table())
    for batch in batches:
        writer.write(batch)
    return writer.commit()
