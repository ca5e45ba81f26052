"""Validation of generation records: types, encoding and size, before anything parses the text.

`validate(raw) -> (row, "")` or `(None, "category: detail")`, like a filter's reason; it never
raises on any dict. What passes is a well-typed row for `postprocess.clean` and the quality
filters (filters.py).
"""
from __future__ import annotations

from dataset_builder.core.instructions import MAX_PROMPT_CHARS

REQUIRED = ("id", "prompt")
TEXT_FIELDS = ("id", "prompt", "response", "source", "lang", "model", "config_hash", "layout")


def encoding_problem(value) -> bool:
    """True if any string in `value` (nested lists/dicts too) cannot be encoded as UTF-8: lone
    surrogates, which is also how undecodable input bytes arrive (surrogateescape)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(encoding_problem(v) for v in value.values())
    if isinstance(value, list):
        return any(encoding_problem(v) for v in value)
    return False


def text_problem(text: str) -> str | None:
    """Why a string is not clean UTF-8 text (None if it is)."""
    if encoding_problem(text):
        return "lone surrogates or undecodable bytes"
    n = text.count("\ufffd")
    return f"{n} replacement characters (U+FFFD)" if n else None


def _is_int(v) -> bool:
    """A plain int that fits the int64 columns it goes to (bool is not an int here)."""
    return isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63


def _field_problem(raw: dict) -> str | None:
    """Why a record's fields are missing or mistyped (None: usable); checked before any is read."""
    for name in REQUIRED:
        if raw.get(name) is None:
            return f"missing_field: {name}"
    for name in TEXT_FIELDS:
        v = raw.get(name)
        if v is not None and not isinstance(v, str):
            return f"bad_type: {name} is {type(v).__name__}"
    paragraphs = raw.get("paragraphs")
    if paragraphs is not None and (not isinstance(paragraphs, list)
                                   or not all(isinstance(p, str) for p in paragraphs)):
        return "bad_type: paragraphs is not a list of strings"
    if paragraphs is None and raw.get("response") is None:
        return "missing_field: paragraphs and response"
    req = raw.get("required_words")
    if req is not None and (not _is_int(req) or req <= 0):
        return f"bad_type: required_words = {req!r:.40}"
    finish = raw.get("finish_reasons")
    if finish is not None and (not isinstance(finish, list)
                               or not all(isinstance(f, str) for f in finish)):
        return "bad_type: finish_reasons is not a list of strings"
    plan = raw.get("plan")
    if plan is not None and (not isinstance(plan, list) or not all(
            isinstance(p, dict) and isinstance(p.get("main_point"), (str, type(None)))
            for p in plan)):
        return "bad_type: plan is not a list of {main_point, words}"
    return None


def _content_problem(raw: dict, max_response_chars: int) -> str | None:
    """Why a well-typed record's text is unusable: empty, oversized or not clean UTF-8."""
    paragraphs, response = raw.get("paragraphs"), raw.get("response")
    if not raw["id"].strip():
        return "missing_field: id is empty"
    if not raw["prompt"].strip():
        return "empty_prompt"
    if len(raw["prompt"]) > MAX_PROMPT_CHARS:
        return f"prompt_too_long: {len(raw['prompt'])} > {MAX_PROMPT_CHARS} characters"
    texts = [raw["prompt"], *(paragraphs or []), response or ""]
    size = sum(map(len, (paragraphs or []))) if paragraphs else len(response or "")
    if size > max_response_chars:
        return f"response_too_long: {size} > {max_response_chars} characters"
    for t in texts:
        problem = text_problem(t)
        if problem:
            return f"broken_utf8: {problem}"
    if not "".join(paragraphs or [response or ""]).strip():
        return "empty_response"
    return None


def validate(raw: dict, max_response_chars: int) -> tuple[dict | None, str]:
    """(row, "") for a usable generation record, (None, "category: detail") otherwise.

    Never raises on any dict: missing fields, wrong types, broken UTF-8 (strings decoded with
    surrogateescape upstream carry lone surrogates), empty or oversized responses.
    """
    if not isinstance(raw, dict):
        return None, f"bad_type: row is {type(raw).__name__}"
    bad = [k for k, v in raw.items() if encoding_problem(v)]
    if bad:
        return None, f"broken_utf8: lone surrogates or undecodable bytes in {bad[0]}"
    problem = _field_problem(raw) or _content_problem(raw, max_response_chars)
    if problem:
        return None, problem
    row = {k: raw.get(k) for k in ("id", "prompt", "source", "lang", "model", "config_hash",
                                   "layout", "required_words", "finish_reasons")}
    row["paragraphs"] = raw.get("paragraphs") or [raw.get("response")]
    row["plan"] = [{"main_point": p.get("main_point"),
                    "words": p.get("words") if _is_int(p.get("words")) else None}
                   for p in raw.get("plan") or []]
    return row, ""
