"""Instruction selection: keep instructions whose answer needs more than N words (paper: 2,000).

The required length comes from, in order: the row's own `required_words`; an explicit length in
the prompt, taken by rules ("3000-word", "3,000 words", "10k words", "3000字", "两千字", "2万字");
an LLM estimate decoded under a digits-only regex (when enabled). `required_words_source`
records which one.
"""
from __future__ import annotations

import re

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


def parse_estimate(text: str) -> int | None:
    m = re.search(r"\d+", text.replace(",", ""))
    return int(m.group()) if m else None


def assign_required(rows: list[dict]) -> list[dict]:
    """Fill required_words from the rules where absent; mark where it came from."""
    for r in rows:
        if r.get("required_words"):
            r["required_words_source"] = "given"
        else:
            r["required_words"] = extract_required_words(r["prompt"])
            r["required_words_source"] = "rule" if r["required_words"] else None
    return rows


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
