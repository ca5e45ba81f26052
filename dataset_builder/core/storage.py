"""Storage: every path is an fsspec URI (plain path, file://, s3://).

S3 goes through s3fs. The endpoint comes from `StorageConfig.endpoint_url` or the environment
(`AWS_ENDPOINT_URL`); credentials only from the environment (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY or any s3fs/botocore source), so they never land in a config file or output.

Datasets are directories of parquet parts. A part becomes visible only when `_manifest.json`
lists it: parts are written under a temporary name and moved into place, then the manifest is
written the same way. Readers read the manifest, never a directory listing.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import uuid
from dataclasses import dataclass

import fsspec
import fsspec.implementations.local
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from dataset_builder.core.config import field, to_dict

MANIFEST = "_manifest.json"
REJECTS_DIR = "_rejects"   # a dataset directory's rejected rows: a dataset of its own


@dataclass
class StorageConfig:
    endpoint_url: str | None = field(
        None, help="S3 endpoint (MinIO, moto, other S3-compatible stores); default: "
        "$AWS_ENDPOINT_URL, else AWS. Credentials always come from the environment.")
    region: str | None = field(None, help="S3 region; default: $AWS_DEFAULT_REGION.")


class StorageError(RuntimeError):
    """An input is missing or a store is unreachable; the message says which and why."""


def storage_options(uri: str, cfg: StorageConfig | None = None) -> dict:
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    cfg = cfg or StorageConfig()
    client_kwargs = {}
    endpoint = cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    region = cfg.region or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        client_kwargs["region_name"] = region
    # Fail fast on a dead endpoint instead of botocore's minutes of retries.
    config_kwargs = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 2}}
    return {"client_kwargs": client_kwargs, "config_kwargs": config_kwargs}


def get_fs(uri: str, cfg: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    # fsspec caches filesystem instances by their options, so repeated calls reuse one S3
    # client (a new one costs 0.2-0.6 s); listings are not cached (use_listings_cache=False)
    # because other processes write the same prefixes.
    opts = storage_options(uri, cfg)
    if opts:
        opts["use_listings_cache"] = False
    fs, path = fsspec.core.url_to_fs(uri, **opts)
    return fs, path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def check_reachable(uri: str, cfg: StorageConfig | None = None, must_exist: bool = False) -> None:
    """Raise StorageError with one clear line if `uri`'s store cannot be reached (or is missing)."""
    try:
        fs, path = get_fs(uri, cfg)
        exists = fs.exists(path)
        if not exists and uri.startswith("s3"):
            fs.ls(path.split("/")[0])  # the bucket must at least exist and answer
    except StorageError:
        raise
    except Exception as e:  # botocore/aiohttp raise a zoo of types; the message is what matters
        down = _endpoint_down(uri, cfg)
        raise StorageError(f"cannot reach storage for {uri}: {type(e).__name__}: {e}"
                           + (f"; also, {down}" if down and down not in str(e) else "")) from None
    if must_exist and not exists:
        raise StorageError(f"input not found: {uri}")


def _endpoint_down(uri: str, cfg: StorageConfig | None) -> str | None:
    """Why a configured S3 endpoint cannot be reached, if it cannot: botocore reports missing
    credentials first, which hid that the endpoint itself was down."""
    import socket
    from urllib.parse import urlparse
    endpoint = storage_options(uri, cfg).get("client_kwargs", {}).get("endpoint_url")
    if not endpoint:
        return None
    u = urlparse(endpoint)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        socket.create_connection((u.hostname, port), timeout=3).close()
    except OSError as e:
        return f"the endpoint {u.scheme}://{u.hostname}:{port} is not reachable ({e.strerror or e})"
    return None


def read_bytes(uri: str, cfg: StorageConfig | None = None) -> bytes:
    # On S3 one GET (a missing key raises FileNotFoundError): open(), and cat_file with
    # s3fs's default max_concurrency, first ask HEAD and, for a missing key, LIST the prefix:
    # three requests for the journal each instruction looks up first (benchmarks/scale.py)
    fs, path = get_fs(uri, cfg)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return fs.cat_file(path, max_concurrency=1) if "s3" in protocols else fs.cat_file(path)


def exists(uri: str, cfg: StorageConfig | None = None) -> bool:
    fs, path = get_fs(uri, cfg)
    return fs.exists(path)


def write_bytes_atomic(uri: str, data: bytes, cfg: StorageConfig | None = None) -> None:
    """Readers never see half a file. On a local disk: a temporary sibling, then a rename. An
    object store's PUT is atomic already (a reader gets the old object or the new one), so
    there the object is written in place: a temporary and a move would add a COPY and a
    DELETE to every write (three requests instead of one, measured in benchmarks/scale.py)."""
    fs, path = get_fs(uri, cfg)
    if not isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        with fs.open(path, "wb") as f:
            f.write(data)
        return
    parent = path.rsplit("/", 1)[0]
    tmp = f"{parent}/_tmp-{uuid.uuid4().hex}-{path.rsplit('/', 1)[-1]}"
    fs.makedirs(parent, exist_ok=True)
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)


def write_json(uri: str, obj, cfg: StorageConfig | None = None) -> None:
    write_bytes_atomic(uri, json.dumps(obj, ensure_ascii=False, indent=2, default=str).encode(), cfg)


def read_json(uri: str, cfg: StorageConfig | None = None):
    return json.loads(read_bytes(uri, cfg))


class JsonStore:
    """One JSON document per key under `uri`: the AgentWrite step journal, evaluation's stored
    generations and the judge cache. Writes are atomic (a reader never sees half a document); a
    missing or damaged document reads as None and is redone, never trusted. `fanout` spreads
    keys over 256 subdirectories (`ab/abcd....json`) for stores of many thousand keys."""

    def __init__(self, uri: str, cfg: StorageConfig | None = None, fanout: bool = False):
        self.uri, self.cfg, self.fanout = uri.rstrip("/"), cfg, fanout

    def _path(self, key: str) -> str:
        return join(self.uri, key[:2], f"{key}.json") if self.fanout \
            else join(self.uri, f"{key}.json")

    def get(self, key: str) -> dict | None:
        try:
            return read_json(self._path(key), self.cfg)
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def put(self, key: str, doc: dict) -> None:
        # compact: these documents are read by programs, and the journal rewrites its
        # instruction's text after every step
        write_bytes_atomic(self._path(key), json.dumps(doc, ensure_ascii=False, default=str,
                                                       separators=(",", ":")).encode(), self.cfg)

    def items(self) -> tuple[dict[str, dict], int]:
        """({key: document}, number of damaged documents) for the whole store."""
        fs, path = get_fs(self.uri, self.cfg)
        try:
            files = fs.find(path)
        except FileNotFoundError:
            return {}, 0
        docs, damaged = {}, 0
        for f in files:
            name = f.rsplit("/", 1)[-1]
            if not name.endswith(".json") or name.startswith("_tmp-"):
                continue
            try:
                with fs.open(f, "rb") as fh:
                    docs[name[:-5]] = json.loads(fh.read())
            except (json.JSONDecodeError, UnicodeDecodeError, OSError):
                damaged += 1
        return docs, damaged


def write_jsonl(uri: str, rows: list[dict], cfg: StorageConfig | None = None) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    write_bytes_atomic(uri, data.encode("utf-8"), cfg)


def read_jsonl(uri: str, cfg: StorageConfig | None = None) -> list[dict]:
    """Strict reader for files this project wrote; see instructions.py for untrusted input."""
    return [json.loads(line) for line in read_bytes(uri, cfg).decode("utf-8").splitlines()
            if line.strip()]


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_parquet(uri: str, cfg: StorageConfig | None = None,
                 columns: list[str] | None = None) -> pa.Table:
    """One parquet file; with `columns`, only their column chunks are read (ranged reads)."""
    if columns is None:
        return pq.read_table(io.BytesIO(read_bytes(uri, cfg)))
    fs, path = get_fs(uri, cfg)
    return pq.read_table(path, columns=columns, filesystem=fs)


class DatasetWriter:
    """Append parquet parts to a dataset directory; each `commit` makes new parts visible.

    Part names are deterministic (`part-00000.parquet`, ...), continuing after the parts already
    in the manifest, so a rerun appends instead of overwriting. A part that was written but not
    committed (crash in between) is invisible and is overwritten by the next writer.
    """

    def __init__(self, uri: str, cfg: StorageConfig | None = None, extra: dict | None = None):
        self.uri, self.cfg = uri.rstrip("/"), cfg
        self.manifest = load_manifest(self.uri, cfg) or {"files": [], "rows": 0}
        self.manifest.update(extra or {})
        self._pending: list[dict] = []
        self._schema: pa.Schema | None = None

    def write(self, rows: list[dict] | pa.Table, schema: pa.Schema | None = None) -> str | None:
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
        self._schema = self._schema or table.schema
        if table.num_rows == 0:
            return None
        name = f"part-{len(self.manifest['files']) + len(self._pending):05d}.parquet"
        data = table_to_parquet_bytes(table)
        write_bytes_atomic(join(self.uri, name), data, self.cfg)
        self._pending.append({"path": name, "rows": table.num_rows,
                              "sha256": hashlib.sha256(data).hexdigest()})
        return name

    def commit(self, **extra) -> dict:
        self.manifest["files"] += self._pending
        self.manifest["rows"] = sum(f["rows"] for f in self.manifest["files"])
        self.manifest.update(extra)
        if self._schema is not None:  # so that a dataset of zero rows still reads with its columns
            self.manifest["arrow_schema"] = encode_schema(self._schema)
        self._pending = []
        write_json(join(self.uri, MANIFEST), self.manifest, self.cfg)
        return self.manifest


def encode_schema(schema: pa.Schema) -> str:
    """A manifest's `arrow_schema`: the Arrow schema (IPC bytes, base64), read back by
    read_dataset when the dataset has no rows."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def load_manifest(uri: str, cfg: StorageConfig | None = None) -> dict | None:
    m = join(uri, MANIFEST)
    return read_json(m, cfg) if exists(m, cfg) else None


def read_dataset(uri: str, cfg: StorageConfig | None = None,
                 columns: list[str] | None = None) -> pa.Table | None:
    """All committed parts of a dataset directory as one table (only `columns`, if given);
    None if nothing was ever committed there (no manifest). A dataset committed with zero rows
    is an empty table, with its schema when the writer saw one (`arrow_schema` in the
    manifest)."""
    manifest = load_manifest(uri, cfg)
    if manifest is None:
        return None
    if not manifest["files"]:
        blob = manifest.get("arrow_schema")
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(blob))) if blob else pa.schema([])
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns if c in schema.names])
        return schema.empty_table()
    tables = [read_parquet(join(uri, f["path"]), cfg, columns) for f in manifest["files"]]
    return pa.concat_tables(tables, promote_options="permissive")


def reset_dataset(uri: str, cfg: StorageConfig | None) -> None:
    """Forget a previous (possibly half-written) output: remove its manifests, so writers
    start again at part-00000 and nothing old stays visible."""
    fs, path = get_fs(uri, cfg)
    for manifest in (f"{path}/{MANIFEST}", f"{path}/{REJECTS_DIR}/{MANIFEST}"):
        if fs.exists(manifest):
            fs.rm(manifest)


def save_resolved_config(cfg, out_uri: str, storage_cfg=None, name: str = "_config.yaml") -> None:
    """The resolved config is saved next to the outputs it produced."""
    data = yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True).encode()
    write_bytes_atomic(join(out_uri, name), data, storage_cfg)
