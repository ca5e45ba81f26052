"""Curation stages on Ray Data: the work table and the load, clean and dedup stages.

The work table (`WORK`) has one row per input row, from load to write; a dropped row keeps its
(stage, reason, detail) and travels on. Each stage is `Dataset -> Dataset`; the per-row logic
is pure (validate.py, filters.py, postprocess.py, minhash.py, dedup.py) and is lifted onto batches here:
    load      one task per committed input part: decode defensively, `validate` every row
    clean     `postprocess.clean` the paragraphs, then the quality `FilterChain`
    dedup     keys and MinHash signatures on workers; `dedup.decide_duplicates` on the
              driver picks the duplicates, which are then marked with stage 'dedup'
    signals   (opt-in) perplexity and relevance under a reference model, through the engine
              stage (signals.py); its thresholds mark rows with stage 'signals'
The driver that wires them together and writes the output is `pipeline.run_curation`.
"""
from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataset_builder.core import progress, storage
from dataset_builder.core.records import PLAN_ITEM
from dataset_builder.core.storage import StorageConfig
from dataset_builder.core.text import count_words, detect_lang
from dataset_builder.curate import signals as sig
from dataset_builder.curate.config import CurateConfig
from dataset_builder.curate.dedup import DedupConfig, decide_duplicates, text_key
from dataset_builder.curate.filters import FilterConfig, build_filters, length_score
from dataset_builder.curate.minhash import MinHasher
from dataset_builder.curate.postprocess import EDIT_KINDS, clean
from dataset_builder.curate.validate import encoding_problem, validate
from dataset_builder.llm.stage import engine_stage

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
    ("finish_reasons", pa.list_(pa.string())), *EDITS, *sig.COLUMNS,
])
SUMMARY_COLUMNS = ["id", "stage", "reason", "lang", "required_words", "response_words",
                   "length_score", *(n for n, _ in EDITS), *(n for n, _ in sig.COLUMNS)]


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


def _clean_batch(batch: pa.Table, filter_cfg: FilterConfig, progress_board=None) -> pa.Table:
    chain = build_filters(filter_cfg)
    rows = [clean_and_filter(r, chain) for r in batch.to_pylist()]
    progress.attach(progress_board)
    progress.add(rows_filtered=len(rows), rows_rejected=sum(bool(r.get("stage")) for r in rows))
    return _to_work(rows)


def load_stage(ds, cfg: CurateConfig):
    """Dataset of {part, rows} -> work rows, validated (one task per part)."""
    return ds.map_batches(_load_batch, batch_size=1, batch_format="pyarrow", num_cpus=cfg.num_cpus,
                          fn_kwargs={"input_uri": cfg.input, "storage_cfg": cfg.storage,
                                     "max_response_chars": cfg.max_response_chars})


def clean_stage(ds, cfg: CurateConfig, progress_board=None):
    """Work rows -> cleaned and filtered; each batch counts its rows for the job's progress."""
    return ds.map_batches(_clean_batch, batch_size=256, batch_format="pyarrow",
                          num_cpus=cfg.num_cpus, fn_kwargs={"filter_cfg": cfg.filters,
                                                            "progress_board": progress_board})


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


def signals_stage(ds, cfg: sig.SignalsConfig, up_key: str, board=None):
    """Work rows -> the same rows with the signal columns set for the rows alive so far, and
    the thresholds applied; only the scores (no text) are gathered on the driver."""
    # ds is materialized (dedup_stage): its count is metadata, no pass over the rows
    scored = engine_stage(ds.map_batches(sig.to_rows, batch_format="pyarrow"), cfg.engine,
                          sig.SignalTask, {"cfg": cfg}, up_key, board, ds.count())
    table = collect(scored.map_batches(sig.scores_only, batch_format="pyarrow"))
    scores = {r.pop("row_key"): r for r in (table.to_pylist() if table is not None else [])}
    return ds.map_batches(sig.mark, batch_format="pyarrow",
                          fn_kwargs={"scores": scores, "cfg": cfg}).materialize()


def signal_extremes(ds, n: int = 5) -> dict:
    """The scored rows with the lowest relevance and the highest perplexity, with the start of
    their text (the report shows them, to choose thresholds from)."""
    from ray.data.expressions import col
    cols = ["id", "stage", "reason", "prompt", "response", "perplexity", "relevance"]
    scored = ds.select_columns(cols).filter(expr=col("relevance").is_not_null())

    def rows(sorted_ds) -> list[dict]:
        return [{**{k: r[k] for k in ("id", "stage", "reason", "perplexity", "relevance")},
                 "prompt": (r["prompt"] or "")[:160], "response": (r["response"] or "")[:400]}
                for r in sorted_ds.take(n)]
    return {"lowest_relevance": rows(scored.sort("relevance")),
            "highest_perplexity": rows(scored.sort("perplexity", descending=True))}
