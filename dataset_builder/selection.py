"""Instruction selection: keep instructions whose answer needs more than N words (paper: 2,000).

The required length comes from, in order: the row's own `required_words`; an explicit length in
the prompt, taken by rules (core/instructions.py: "3000-word", "3,000 words", "10k words",
"3000字", "两千字", "2万字"); an LLM estimate decoded under a digits-only regex (when enabled,
in the engine stage: generation.AgentWriteTask). `required_words_source` records which one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from dataset_builder.core.config import field


@dataclass
class SelectionConfig:
    min_required_words: int = field(2000, help="Keep instructions whose answer needs at least "
        "this many words (the paper: 2,000). 0 keeps everything.")
    llm_estimate: bool = field(True, help="Ask the engine for a length estimate when the prompt "
        "states none (digits-only regex constraint); otherwise such rows are rejected.")
    max_estimate_words: int = field(32000, help="An LLM estimate above this is implausible (a "
        "small model said 123,456 words for a one-line translation) and the row is rejected as "
        "`estimate_out_of_range`; LongWriter-6k outputs reach 32k words.")
    languages: list[str] = field(default_factory=list, help="Instruction languages to generate "
        "(e.g. [en]); others are rejected as `language_not_generated` before any engine call. "
        "Empty: all. A model that cannot write Chinese (the 135M demo model) only makes "
        "rows that curation drops as language_mismatch.")


def parse_estimate(text: str) -> int | None:
    m = re.search(r"\d+", text.replace(",", ""))
    return int(m.group()) if m else None


def keep(row: dict, min_words: int, max_estimate: int | None = None,
         languages: list[str] | tuple = ()) -> tuple[bool, str | None]:
    """(keep, reason). An LLM estimate above `max_estimate` is out of range, not a request.
    `languages` (empty: any) are those the generating model can write."""
    if languages and row.get("lang") not in languages:
        return False, f"language_not_generated: {row.get('lang')} not in {list(languages)}"
    req = row.get("required_words")
    if req is None:
        return False, "required_words_unknown"
    if max_estimate and row.get("required_words_source") == "llm" and req > max_estimate:
        return False, f"estimate_out_of_range: {req} > {max_estimate}"
    if req < min_words:
        return False, f"below_min_required_words: {req} < {min_words}"
    return True, None


def decide(rows: list[dict], done: set, recorded: set, sel: SelectionConfig,
           limit: int | None = None) -> dict:
    """(file, line) -> "todo" | "skip" | "later" | (stage, reason), in input order: earlier results are
    skipped, repeated ids are duplicates, the length rules apply, then `limit`. The driver
    decides from each row's id, file, line, language and length (no text)."""
    out, seen, n_todo = {}, set(), 0
    for r in sorted(rows, key=lambda r: (r["file"], r["line"])):
        key = (r["file"], r["line"])
        if r["status"] == "reject":
            out[key] = "skip" if ("input", None, r["line"], r["file"]) in recorded else "keep"
            continue
        if r["id"] in done:
            out[key] = "skip"
            continue
        if r["id"] in seen:
            out[key] = ("dedup", "duplicate_prompt")
            continue
        seen.add(r["id"])
        ok, reason = keep(r, sel.min_required_words, sel.max_estimate_words,
                                    sel.languages)
        if not ok and reason == "required_words_unknown" and sel.llm_estimate:
            ok = True  # the engine stage estimates it, then applies the rules
        if not ok:
            out[key] = ("selection", reason)
        elif limit is not None and n_todo >= limit:
            out[key] = "later"  # selected, beyond this run's limit
        else:
            out[key] = "todo"
            n_todo += 1
    return out


def send_order(rows: list[dict], decisions: dict, longest_first: bool) -> dict:
    """(file, line) -> rank of each "todo" row in the engine stage's queue. Longest first is
    the classic makespan rule (LPT): the rows that run longest start while the pool is full,
    and the short ones fill the gaps at the end. A row with no stated length (the LLM
    estimates it in the stage) may be as long as any, so it goes before all of them."""
    todo = [r for r in rows if decisions[(r["file"], r["line"])] == "todo"]
    if longest_first:
        todo.sort(key=longest_first_key)
    return {(r["file"], r["line"]): i for i, r in enumerate(todo)}


def longest_first_key(row: dict) -> float:
    """Sort key of the send order: the most required words first, unknown lengths before all."""
    return -(row.get("required_words") or float("inf"))
