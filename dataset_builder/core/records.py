"""The data contracts (DESIGN.md §5): parquet schemas, so every writer agrees with every reader,
and the typed row shapes that pass between stages (TypedDicts mirroring the schemas)."""
from __future__ import annotations

import json
from typing import TypedDict

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


def reject_record(item: dict) -> Reject:
    """The REJECT row of a dropped item (any stage): where it came from, which stage, why, and
    its text (the raw input line, else the prompt) cut to 2,000 characters."""
    raw = item.get("raw")
    if raw is None:
        raw = item.get("prompt") or ""
    return {"id": item.get("id"), "line": item.get("line"), "stage": item["stage"],
            "reason": item["reason"], "raw": str(raw)[:2000], "file": item.get("file")}


# LongWriter-6k record (curation's output, SFT's input): the conversation plus its metadata.
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
LONGWRITER = pa.schema([
    ("id", pa.string()),
    ("messages", pa.list_(MESSAGE)),          # [{user, prompt}, {assistant, response}]
    ("source", pa.string()),
    ("lang", pa.string()),
    ("required_words", pa.int64()),
    ("response_words", pa.int64()),           # count_words of the cleaned response
    ("length_score", pa.float64()),           # S_l against required_words (null if none)
    ("plan", pa.list_(PLAN_ITEM)),
    ("model", pa.string()),
    ("config_hash", pa.string()),             # of the generation run
    ("layout", pa.string()),
    ("perplexity", pa.float64()),             # curation's quality signals (null: not scored)
    ("relevance", pa.float64()),
])


class Instruction(TypedDict, total=False):
    """One instruction (INSTRUCTION_FIELDS), as read by instructions.py."""
    id: str
    prompt: str
    source: str
    lang: str
    required_words: int | None
    required_words_source: str | None   # given | rule | llm
    file: str                           # where it was read from
    line: int


class Reject(TypedDict):
    """A row of REJECT."""
    id: str | None
    line: int | None
    stage: str
    reason: str
    raw: str
    file: str | None


# ---------------------------------------------------------------------------------------------
# Rows of the engine stage (llm/stage.py): the item travels as a JSON string, so Ray Data never
# infers an Arrow schema from a nested record.

ROW = pa.schema([("id", pa.string()), ("status", pa.string()), ("payload", pa.string())])


class StageRow(TypedDict):
    """A row of ROW: `payload` is the item (an Instruction plus what stages add) as JSON."""
    id: str | None
    status: str        # "todo", "ok", "reject", or a task's own (`EngineTask.accepts`)
    payload: str


def todo(item: dict) -> StageRow:
    """A row for the engine stage."""
    return {"id": item["id"], "status": "todo",
            "payload": json.dumps(item, ensure_ascii=False, default=str)}


def reject_row(item: dict, stage: str, reason: str) -> StageRow:
    """A row that is rejected: it passes later stages untouched and lands in `_rejects/`."""
    return {"id": item.get("id"), "status": "reject",
            "payload": json.dumps({**item, "stage": stage, "reason": reason},
                                  ensure_ascii=False, default=str)}
