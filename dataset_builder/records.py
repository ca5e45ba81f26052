"""Parquet schemas of the data contracts (DESIGN.md §5), so every writer agrees with every reader."""
from __future__ import annotations

import pyarrow as pa

PLAN_ITEM = pa.struct([("main_point", pa.string()), ("words", pa.int64())])

INSTRUCTION_FIELDS = [
    ("id", pa.string()), ("prompt", pa.string()), ("source", pa.string()),
    ("lang", pa.string()), ("required_words", pa.int64()),
]

GENERATION = pa.schema(INSTRUCTION_FIELDS + [
    ("plan", pa.list_(PLAN_ITEM)),              # the plan: paragraphs with word budgets
    ("paragraphs", pa.list_(pa.string())),      # one written text per plan step
    ("response", pa.string()),                  # paragraphs joined with blank lines
    ("response_words", pa.int64()),             # count_words(response, "legacy")
    ("model", pa.string()),
    ("config_hash", pa.string()),
    ("layout", pa.string()),                    # "paper" or "append"
    ("plan_attempts", pa.int64()),
    ("step_prompt_tokens", pa.list_(pa.int64())),   # index 0 = plan, 1..N = write steps
    ("step_output_tokens", pa.list_(pa.int64())),
    ("step_cached_tokens", pa.list_(pa.int64())),
    ("finish_reasons", pa.list_(pa.string())),
    ("resumed_steps", pa.int64()),              # steps (plan included) taken from the journal
    ("required_words_source", pa.string()),     # given | rule | llm (selection.py)
])

# Every dropped row: where it came from (file, 1-based line or row), which stage, why.
REJECT = pa.schema([("id", pa.string()), ("line", pa.int64()), ("stage", pa.string()),
                    ("reason", pa.string()), ("raw", pa.string()), ("file", pa.string())])


def reject_record(item: dict) -> dict:
    """The REJECT row of a dropped item (any stage): where it came from, which stage, why, and
    its text (the raw input line, else the prompt) cut to 2,000 characters."""
    raw = item.get("raw")
    if raw is None:
        raw = item.get("prompt") or ""
    return {"id": item.get("id"), "line": item.get("line"), "stage": item["stage"],
            "reason": item["reason"], "raw": str(raw)[:2000], "file": item.get("file")}
