"""SFT data: conversations -> checked rows -> token ids with assistant-only targets -> BFD packs.

    rows, rejects = read_conversations(uri)          # curated dir, jsonl or parquet; local or s3
    ok, reason = check_messages(row["messages"])     # pure predicate with a reason
    ids, mask = encode(messages, tokenizer)          # the model's own chat template
    packs = pack(encoded, max_length)                # TRL's best-fit-decreasing packer

Rows carry `messages` (LongWriter-6k as published, curated directories) or `prompt` and
`response` (a generation directory), read as one user and one assistant turn.
Every dropped row becomes a reject (records.REJECT: file, line, stage, reason); nothing is
truncated: a row longer than `max_length` is rejected as `too_long`, as the paper's code skips it.
"""
from __future__ import annotations

import hashlib
import json
import random
from array import array

import pyarrow as pa

from dataset_builder.core import storage
from dataset_builder.core.config import ConfigError
from dataset_builder.core.records import reject_record
from dataset_builder.core.text import stable_id

STAGE = "sft_data"
ROLES = ("system", "user", "assistant")


def _reject(file: str, line: int, reason: str, row, id_=None) -> dict:
    raw = row if isinstance(row, str) else json.dumps(row, ensure_ascii=False, default=str)
    return reject_record({"id": id_, "line": line, "stage": STAGE, "reason": reason, "raw": raw,
                          "file": file})


def _files(uri: str, cfg) -> list[str]:
    """A manifest directory's listed parts, a glob, or one file. A directory without a
    manifest is refused: its parts may be half-written (DESIGN.md §5)."""
    if storage.exists(storage.join(uri, storage.MANIFEST), cfg):
        manifest = storage.load_manifest(uri, cfg)
        return [storage.join(uri, f["path"]) for f in manifest["files"]]
    fs, path = storage.get_fs(uri, cfg)
    if any(c in path for c in "*?["):
        found = sorted(fs.glob(path))
        prefix = uri.split("://")[0] + "://" if "://" in uri else ""
        return [prefix + p for p in found if p.endswith((".jsonl", ".json", ".parquet"))]
    if not fs.exists(path):
        raise storage.StorageError(f"training data not found: {uri}")
    if fs.isdir(path):
        raise storage.StorageError(
            f"{uri} is a directory without {storage.MANIFEST}: not a committed dataset "
            "(pass a curated dataset directory, a file, or a glob such as dir/*.parquet)")
    return [uri]


CONVERSATION_COLUMNS = (("messages",), ("prompt", "response"))


def _read_file(uri: str, cfg, columns=CONVERSATION_COLUMNS) -> tuple[list[dict], list[dict]]:
    """Rows of one jsonl/parquet file; a parquet file must hold one of the `columns` sets."""
    rows, rejects = [], []
    data = storage.read_bytes(uri, cfg)
    if uri.endswith(".parquet"):
        import io

        import pyarrow.parquet as pq
        table = pq.read_table(io.BytesIO(data))
        if not any(set(c) <= set(table.column_names) for c in columns):
            want = " or ".join("+".join(f"`{n}`" for n in c) for c in columns)
            raise storage.StorageError(f"{uri} has no {want} columns (columns: "
                                       f"{', '.join(table.column_names)})")
        for n, row in enumerate(table.to_pylist(), start=1):
            rows.append({**row, "_file": uri, "_line": n})
        return rows, rejects
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            rejects.append(_reject(uri, n, f"malformed_json: {e}", raw.decode("utf-8", "replace")))
            continue
        if not isinstance(obj, dict):
            rejects.append(_reject(uri, n, "not_an_object", obj))
            continue
        rows.append({**obj, "_file": uri, "_line": n})
    return rows, rejects


def read_conversations(uri: str, cfg=None, columns=CONVERSATION_COLUMNS,
                       allow_instant: bool = False) -> tuple[list[dict], list[dict]]:
    """All rows of a training set (with `_file`/`_line`), and the lines that are not rows.
    Rows made by the instant engine (`model` = instant:...) are refused unless
    `allow_instant`: they are stand-in text for rehearsals, never training data."""
    rows, rejects = [], []
    files = _files(uri, cfg)
    if not files:
        raise storage.StorageError(f"no training data files in {uri}")
    for f in files:
        r, j = _read_file(f, cfg, columns)
        rows += r
        rejects += j
    instant = sum(str(r.get("model") or "").startswith("instant:") for r in rows)
    if instant and not allow_instant:
        raise InstantDataError(
            f"{uri}: {instant} of {len(rows)} rows were made by the instant engine (model "
            "instant:...), a stand-in without a model: set allow_instant_data=true to train "
            "on them anyway (rehearsals only)")
    return rows, rejects


class InstantDataError(ConfigError):
    """Training data made by the instant engine, not allowed by the config."""


def check_messages(messages) -> tuple[bool, str]:
    """(keep, reason): a list of {role, content} turns, optional system first, then
    user/assistant alternating, ending with a non-empty assistant turn."""
    if not isinstance(messages, list) or not messages:
        return False, "no_messages"
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return False, "bad_turn: each turn needs role and content"
        if not isinstance(m["content"], str):
            return False, f"non_string_content: {type(m['content']).__name__} in {m['role']} turn"
        if m["role"] not in ROLES:
            return False, f"wrong_roles: unknown role {m['role']!r}"
    roles = [m["role"] for m in messages]
    body = roles[1:] if roles[0] == "system" else roles
    if "assistant" not in body:
        return False, "missing_assistant"
    if body[-1] != "assistant":
        return False, "wrong_roles: last turn is not the assistant's"
    if any(r != ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(body)):
        return False, "wrong_roles: expected user/assistant alternating: " + ",".join(roles)
    if any(m["role"] == "assistant" and not m["content"].strip() for m in messages):
        return False, "empty_assistant"
    return True, ""


def encode(messages: list[dict], tokenizer) -> tuple[list[int], list[int]]:
    """Token ids of the conversation in the model's chat template, and a 0/1 mask that is 1 on
    every assistant turn's tokens (its end-of-turn included, so the model learns to stop).

    The text is rendered and tokenized once; assistant spans come from rendering each prefix
    (with the generation prompt) and must be prefixes of the whole, which every chat template
    that appends turns satisfies."""
    def render(msgs, gen=False):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    text = render(messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before, upto = render(messages[:i], gen=True), render(messages[: i + 1])
        if not (text.startswith(before) and text.startswith(upto)):
            raise ValueError("chat template does not render turns as prefixes")
        spans.append((len(before), len(upto)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a <= start < b for a, b in spans)) for start, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def mix(long_rows: list[dict], chat_rows: list[dict], ratio: float, seed: int) -> list[dict]:
    """LongWriter rows plus round(ratio * len(long_rows)) chat rows sampled without replacement."""
    n = min(len(chat_rows), round(ratio * len(long_rows)))
    return long_rows + random.Random(seed).sample(chat_rows, n)


def encode_rows(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], list[dict]]:
    """Checked, encoded rows ({id, source, input_ids, mask}) and rejects with reasons."""
    kept, rejects = [], []
    for row in rows:
        file, line = row.get("_file"), row.get("_line")
        messages = row.get("messages")
        if messages is None and "response" in row:  # a generation directory: prompt/response
            messages = [{"role": "user", "content": row.get("prompt")},
                        {"role": "assistant", "content": row.get("response")}]
        id_ = row.get("id") or (stable_id(json.dumps(messages, default=str)[:10000])
                                if messages is not None else None)
        clean = {k: v for k, v in row.items() if not k.startswith("_")}
        ok, reason = check_messages(messages)
        if not ok:
            rejects.append(_reject(file, line, reason, clean, id_))
            continue
        try:
            ids, mask = encode([{"role": m["role"], "content": m["content"]} for m in messages],
                               tokenizer)
        except ValueError as e:  # a template that cannot mark assistant turns
            rejects.append(_reject(file, line, f"template_error: {e}", clean, id_))
            continue
        if len(ids) > max_length:
            rejects.append(_reject(file, line, f"too_long: {len(ids)} tokens > max_length "
                                   f"{max_length}", clean, id_))
            continue
        if not any(mask):
            rejects.append(_reject(file, line, "no_target_tokens", clean, id_))
            continue
        kept.append({"id": id_, "source": row.get("_source", "data"), "input_ids": ids,
                     "mask": mask})
    return kept, rejects


def pack(encoded: list[dict], max_length: int, packing: bool = True) -> pa.Table:
    """Best-fit-decreasing packs of whole documents: columns input_ids, mask, seq_lengths
    (document lengths within each pack). packing=False: one document per pack, in order.

    TRL's packer (a segment tree over free space) called on the Arrow table directly:
    `trl.pack_dataset` wraps the same function in a `datasets` map, whose fingerprinting
    pickles the table's types with dill and failed on the GPU machine (Python 3.12, dill 0.4.1:
    "Can't pickle MonthDayNano"); trl is pinned, so the private name is stable here."""
    from trl.data_utils import _pack_bfd
    table = pa.table({"input_ids": pa.array([e["input_ids"] for e in encoded],
                                            pa.list_(pa.int32())),
                      "mask": pa.array([e["mask"] for e in encoded], pa.list_(pa.int8()))})
    if not packing:
        return table.append_column("seq_lengths", pa.array(
            [[len(e["input_ids"])] for e in encoded], pa.list_(pa.int32())))
    return _pack_bfd(table, max_length)


def fingerprint(encoded: list[dict]) -> str:
    """sha256 over every trained row's id, token ids and target mask, in order."""
    h = hashlib.sha256()
    for e in encoded:
        h.update(str(e["id"]).encode() + b"\0")
        h.update(array("i", e["input_ids"]).tobytes())
        h.update(bytes(e["mask"]))
    return h.hexdigest()
