"""Reading instructions from untrusted files: every bad row becomes a reject with a reason.

Instruction contract (DESIGN.md §5): id (stable hash of the normalized prompt), prompt, source,
lang, required_words (nullable). Input is jsonl or parquet at any fsspec URI, with at least a
`prompt` field; `id`, `source`, `lang`, `required_words` are filled in when absent.
"""
from __future__ import annotations

import json
import re

from dataset_builder.core import storage
from dataset_builder.core.records import reject_record, reject_row, todo
from dataset_builder.core.text import detect_lang, stable_id

MAX_PROMPT_CHARS = 100_000  # far above any real instruction; guards against pasted dumps


def validate(obj, line: int, source: str) -> tuple[dict | None, str | None]:
    """(instruction, None) for a usable row, (None, reason) otherwise."""
    if not isinstance(obj, dict):
        return None, f"not_an_object: {type(obj).__name__}"
    prompt = obj.get("prompt")
    if prompt is None:
        return None, "missing_prompt"
    if not isinstance(prompt, str):
        return None, f"prompt_not_string: {type(prompt).__name__}"
    if not prompt.strip():
        return None, "empty_prompt"
    if len(prompt) > MAX_PROMPT_CHARS:
        return None, f"prompt_too_long_chars: {len(prompt)} > {MAX_PROMPT_CHARS}"
    req = obj.get("required_words")
    if req is not None and (isinstance(req, bool) or not isinstance(req, (int, float)) or req <= 0):
        return None, f"bad_required_words: {req!r}"
    return {
        "id": str(obj.get("id") or stable_id(prompt)),
        "prompt": prompt,
        "source": str(obj.get("source") or source),
        "lang": str(obj.get("lang") or detect_lang(prompt)),
        "required_words": int(req) if req is not None else None,
        "line": line,
    }, None


def _reject(line: int, reason: str, raw, file: str | None = None) -> dict:
    return reject_record({"line": line, "stage": "input", "reason": reason, "file": file,
                          "raw": raw if isinstance(raw, str) else repr(raw)})


def parse_jsonl(data: bytes, source: str) -> tuple[list[dict], list[dict]]:
    rows, rejects = [], []
    lines = data.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()  # the newline that ends the file is not a line
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():  # counted, so input lines = rows + rejects
            rejects.append(_reject(n, "blank_line", ""))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            rejects.append(_reject(n, f"invalid_utf8: byte {e.start}", raw.decode("utf-8", "replace")))
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            rejects.append(_reject(n, f"malformed_json: {e.msg} at column {e.colno}", text))
            continue
        row, reason = validate(obj, n, source)
        rows.append(row) if row else rejects.append(_reject(n, reason, text))
    return rows, rejects


def read_instructions(uri: str, cfg: storage.StorageConfig | None = None
                      ) -> tuple[list[dict], list[dict]]:
    """(instructions, rejects) from a jsonl or parquet file. Raises StorageError if missing."""
    storage.check_reachable(uri, cfg, must_exist=True)
    source = uri.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
    if uri.endswith(".parquet"):
        rows, rejects = [], []
        for n, obj in enumerate(storage.read_parquet(uri, cfg).to_pylist(), start=1):
            row, reason = validate(obj, n, source)
            rows.append(row) if row else rejects.append(_reject(n, reason, json.dumps(obj, default=str)))
        return rows, rejects
    return parse_jsonl(storage.read_bytes(uri, cfg), source)


INPUT_SUFFIXES = (".jsonl", ".json", ".parquet")


def input_files(uri: str, cfg: storage.StorageConfig | None = None) -> list[str]:
    """The files an `input` names: one file, a directory (its jsonl/parquet files, recursively)
    or a glob; each as a full URI. Raises StorageError when there is none."""
    fs, path = storage.get_fs(uri, cfg)
    proto = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    try:
        if any(ch in path for ch in "*?["):
            found = sorted(fs.glob(path))
        elif fs.isdir(path):
            found = sorted(p for p in fs.find(path) if p.endswith(INPUT_SUFFIXES)
                           and not p.rsplit("/", 1)[-1].startswith(("_", ".")))
        else:
            storage.check_reachable(uri, cfg, must_exist=True)
            return [uri]
    except storage.StorageError:
        raise
    except Exception as e:
        raise storage.StorageError(f"cannot list input {uri}: {type(e).__name__}: {e}") from None
    if not found:
        raise storage.StorageError(f"input not found: no jsonl or parquet files at {uri}")
    return [proto + p if proto and not p.startswith(proto) else p for p in found]


def parse_file(row: dict, storage_cfg=None) -> list[dict]:
    """Ray Data flat_map over input files: one row per input line, an instruction or a reject
    (stage "input", with file and line). Runs in a Ray task, so files are read across the
    cluster, through this project's storage layer (its S3 endpoint settings), not a driver loop."""
    uri = row["file"]
    rows, rejects = read_instructions(uri, storage_cfg)
    out = [todo({**r, "file": uri}) for r in assign_required(rows)]
    return out + [reject_row({**r, "file": uri}, "input", r["reason"]) for r in rejects]


# ---------------------------------------------------------------------------------------------
# The required length stated in a prompt

_NUM = r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s*([kK千]|万)?"
_EN = re.compile(_NUM + r"\s*(?:-|\s)?\s*(?:words?\b|word-long)", re.IGNORECASE)
_ZH = re.compile(_NUM + r"\s*(?:字|词)")
_ZH_NUMERAL = re.compile(r"([零〇一二两三四五六七八九十百千万]+)\s*(?:字|词)")
_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
           "七": 7, "八": 8, "九": 9}
_UNITS = {"十": 10, "百": 100, "千": 1000}


def _scale(value: float, unit: str | None) -> int:
    return int(value * {"k": 1000, "K": 1000, "千": 1000, "万": 10000}.get(unit or "", 1))


def chinese_numeral(s: str) -> int | None:
    """两千 -> 2000, 三千五百 -> 3500, 一万 -> 10000, 十 -> 10; None if not a numeral."""
    total, section, digit = 0, 0, None
    for ch in s:
        if ch in _DIGITS:
            digit = _DIGITS[ch]
        elif ch in _UNITS:
            section += (digit if digit is not None else 1) * _UNITS[ch]
            digit = None
        elif ch == "万":
            total += (section + (digit or 0)) * 10000
            section, digit = 0, None
        else:
            return None
    value = total + section + (digit or 0)
    return value or None


def extract_required_words(prompt: str) -> int | None:
    """The largest explicit length the prompt states, in words (CJK: characters); else None."""
    found = []
    for m in list(_EN.finditer(prompt)) + list(_ZH.finditer(prompt)):
        found.append(_scale(float(m.group(1).replace(",", "")), m.group(2)))
    for m in _ZH_NUMERAL.finditer(prompt):
        v = chinese_numeral(m.group(1))
        if v:
            found.append(v)
    found = [v for v in found if 10 <= v <= 1_000_000]
    return max(found) if found else None


def assign_required(rows: list[dict]) -> list[dict]:
    """Fill required_words from the rules where absent; mark where it came from."""
    for r in rows:
        if r.get("required_words"):
            r["required_words_source"] = "given"
        else:
            r["required_words"] = extract_required_words(r["prompt"])
            r["required_words_source"] = "rule" if r["required_words"] else None
    return rows
