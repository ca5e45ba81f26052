"""A Ray Data Datasink for datasets with a manifest (storage.py): parts appear atomically, each
id is listed once.

Ray Data's Datasink has no staging (DESIGN.md §4), so each write task makes its own part
visible: the parquet part is written under a deterministic name (run id + task index: a retried
task overwrites its own part), then a commit marker `_commits/<part>.json` with its rows,
sha256 and ids. `on_write_complete` runs once on the driver and merges the markers into
`_manifest.json`, listing an id only once (a part holding ids already listed is rewritten
without them). After a crash, `merge_commits` at the next start picks up every committed part,
so nothing a finished task wrote is lost or generated again.

The sink takes engine-stage rows (`id`, `status`, `payload` JSON): each status goes to its own
dataset (`outputs`). The job's counts are added up in each write task (`tally()`: an object
with `add(item, status)` and `merge(other)`) and merged on the driver: one small object per
part reaches the driver, never one per row (a million rows' summaries would not fit it).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasink

from dataset_builder.core import progress, storage

log = logging.getLogger(__name__)
COMMITS = "_commits"


@dataclass
class Output:
    uri: str                      # dataset directory
    schema: pa.Schema
    to_row: Callable[[dict], dict]
    unique_ids: bool = True       # the manifest lists each id once (rejects: no)


class ManifestSink(Datasink):
    def __init__(self, outputs: dict[str, Output], storage_cfg, run_id: str, min_rows: int,
                 tally: Callable[[], Any], manifest_extra: dict | None = None,
                 progress_board=None):
        """`progress_board`: each write task counts `rows_committed` there."""
        self.outputs, self.cfg, self.run_id = outputs, storage_cfg, run_id
        self.board = progress_board
        self._min_rows, self.tally = min_rows, tally
        self.extra = manifest_extra or {}
        self.total = tally()   # every write task's tally, merged (on_write_complete)
        self.commit_seconds = 0.0   # on_write_complete: the manifest merge

    @property
    def min_rows_per_write(self) -> int:
        return self._min_rows

    def write(self, blocks, ctx) -> list[dict]:
        by_status: dict[str, list[dict]] = {}
        tally, n = self.tally(), 0
        for block in blocks:
            for row in _rows(block):
                item = json.loads(row["payload"])
                by_status.setdefault(row["status"], []).append(item)
                tally.add(item, row["status"])
                n += 1
        for status, items in by_status.items():
            out = self.outputs[status]
            table = pa.Table.from_pylist([out.to_row(i) for i in items], schema=out.schema)
            name = f"part-{self.run_id}-{ctx.task_idx:05d}.parquet"
            write_part(out.uri, name, table, self.cfg)
        progress.attach(self.board)
        progress.add(rows_committed=n)
        return tally

    def on_write_complete(self, write_result) -> None:
        t0 = time.monotonic()
        for ret in write_result.write_returns:
            self.total.merge(ret)
        for out in self.outputs.values():
            merge_commits(out.uri, self.cfg, out.unique_ids, self.extra, out.schema)
        self.commit_seconds = round(time.monotonic() - t0, 2)


def _rows(block) -> list[dict]:
    from ray.data.block import BlockAccessor
    return BlockAccessor.for_block(block).to_arrow().to_pylist()


def write_part(uri: str, name: str, table: pa.Table, cfg=None) -> None:
    """The part, then its commit marker: a part without a marker is never read."""
    data = storage.table_to_parquet_bytes(table)
    storage.write_bytes_atomic(storage.join(uri, name), data, cfg)
    ids = table.column("id").to_pylist() if "id" in table.column_names else []
    storage.write_json(storage.join(uri, COMMITS, name + ".json"),
                       {"path": name, "rows": table.num_rows,
                        "sha256": hashlib.sha256(data).hexdigest(), "ids": ids}, cfg)


def merge_commits(uri: str, cfg=None, unique_ids: bool = True, extra: dict | None = None,
                  schema: pa.Schema | None = None) -> dict:
    """Move committed parts into the manifest (idempotent; each id listed once). `schema` is
    recorded, so that a dataset with no rows reads as an empty table with its columns."""
    fs, path = storage.get_fs(storage.join(uri, COMMITS), cfg)
    markers = sorted(p for p in (fs.ls(path, detail=False) if fs.exists(path) else [])
                     if p.endswith(".json"))
    listed_before = storage.load_manifest(uri, cfg)
    manifest = listed_before or {"files": [], "rows": 0}
    manifest.update(extra or {})
    if schema is not None:
        manifest["arrow_schema"] = storage.encode_schema(schema)
    if not markers and listed_before:
        return manifest
    listed = {f["path"] for f in manifest["files"]}
    seen = _listed_ids(uri, manifest, cfg) if unique_ids else set()
    for m in markers:
        with fs.open(m, "rb") as f:
            c = json.loads(f.read())
        if c["path"] in listed:
            continue
        dup = [i for i in c["ids"] if i in seen] if unique_ids else []
        if dup:  # rows of ids already listed: keep the first copy only
            log.warning("%s: %d duplicate ids dropped from %s", uri, len(dup), c["path"])
            t = storage.read_parquet(storage.join(uri, c["path"]), cfg)
            keep = pa.array([i not in seen for i in t.column("id").to_pylist()])
            c = _rewrite(uri, c["path"], t.filter(keep), cfg)
        seen.update(c["ids"])
        if c["rows"]:
            manifest["files"].append({k: c[k] for k in ("path", "rows", "sha256")})
            listed.add(c["path"])
    manifest["rows"] = sum(f["rows"] for f in manifest["files"])
    storage.write_json(storage.join(uri, storage.MANIFEST), manifest, cfg)
    for m in markers:
        fs.rm(m)
    if markers:
        log.info("%s: committed %d parts, %d rows in all", uri, len(markers), manifest["rows"])
    return manifest


def _listed_ids(uri: str, manifest: dict, cfg) -> set:
    ids = set()
    for f in manifest["files"]:
        raw = storage.read_bytes(storage.join(uri, f["path"]), cfg)
        ids.update(pq.read_table(pa.BufferReader(raw), columns=["id"]).column("id").to_pylist())
    return ids


def _rewrite(uri: str, name: str, table: pa.Table, cfg) -> dict:
    data = storage.table_to_parquet_bytes(table)
    storage.write_bytes_atomic(storage.join(uri, name), data, cfg)
    return {"path": name, "rows": table.num_rows, "sha256": hashlib.sha256(data).hexdigest(),
            "ids": table.column("id").to_pylist()}
