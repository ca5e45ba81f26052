"""Text utilities shared by every stage: word counting, prompt normalization, stable ids.

`count_words(text, mode="legacy")` is the one word counter of the project. The legacy mode is
LongBench-Write's published counter, so length scores compare with the paper.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata

import regex  # third-party `regex`: \p{...} classes that the stdlib `re` lacks

_LEGACY_CJK = re.compile(r"[\u4e00-\u9fff]")
_LEGACY_WORD = re.compile(r"\b[a-zA-Z]+\b")

# Unicode mode: every CJK ideograph block, kana and hangul syllables count one per character;
# elsewhere a word is a run of letters/digits/marks, joined by an inner apostrophe or hyphen
# ("don't", "state-of-the-art" are one word each).
_UNICODE_CJK = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Bopomofo}]")
# Numbers keep their separators ("1,000", "3.14", "10:30" are one word each).
_UNICODE_WORD = regex.compile(
    r"\p{N}+(?:[.,:]\p{N}+)+|[\p{L}\p{M}\p{N}]+(?:['\u2019\-\u2010\u2011][\p{L}\p{M}\p{N}]+)*"
)

WORD_COUNT_MODES = ("legacy", "unicode")


def count_words(text: str | None, mode: str = "legacy") -> int:
    """Words in `text`: CJK characters count one each, plus words in other scripts.

    legacy:  as published with LongBench-Write: CJK U+4E00..U+9FFF + `\\b[a-zA-Z]+\\b`.
    unicode: letters of every script, numbers (with separators, "1,000"), contractions and
             hyphenated words as one word; all CJK blocks, kana, hangul and bopomofo one per
             character. Scripts written without spaces (Thai, Lao, Khmer) count one word per run.
    """
    if not text:
        return 0
    if mode == "legacy":
        return len(_LEGACY_CJK.findall(text)) + len(_LEGACY_WORD.findall(text))
    if mode == "unicode":
        cjk = len(_UNICODE_CJK.findall(text))
        rest = _UNICODE_CJK.sub(" ", text)
        return cjk + len(_UNICODE_WORD.findall(rest))
    raise ValueError(f"unknown word-count mode {mode!r}; expected one of {WORD_COUNT_MODES}")


def normalize_prompt(text: str) -> str:
    """Canonical form for exact-duplicate detection and ids: NFKC, casefold, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def stable_id(text: str) -> str:
    """Stable instruction id: sha1 of the normalized prompt (16 hex chars)."""
    return hashlib.sha1(normalize_prompt(text).encode("utf-8")).hexdigest()[:16]


def detect_lang(text: str) -> str:
    """'zh' when CJK ideographs make up over 20% of the letters, else 'en' (the paper's two)."""
    cjk = len(_LEGACY_CJK.findall(text))
    letters = sum(ch.isalpha() for ch in text)
    return "zh" if letters and cjk / letters > 0.2 else "en"


def length_score(required: float, produced: float) -> float:
    """S_l of one response as published with LongBench-Write; `produced == 0` scores 0 (the
    published code divides by zero there; the limit of its formula is 0). Shared by curation's
    length-adherence filter and eval's scoring."""
    if isinstance(required, bool) or not required > 0:
        raise ValueError(f"required length must be positive, got {required!r}")
    if isinstance(produced, bool) or produced is None or produced < 0:
        raise ValueError(f"produced length must be >= 0, got {produced!r}")
    if produced == 0:
        return 0.0
    if produced > required:
        return 100.0 * max(0.0, 1.0 - (produced / required - 1.0) / 3.0)
    return 100.0 * max(0.0, 1.0 - (required / produced - 1.0) / 2.0)


# Refusal and apology boilerplate at the start of a text (English and Chinese). Shared by
# AgentWrite (retry a refused step) and curation (drop refused responses).
_REFUSAL = [re.compile(p, re.IGNORECASE) for p in (
    r"\bas an ai(?: language)? (?:model|assistant)\b",
    r"^[\s#*>]*(?:i'?m|i am) (?:very |so |truly )?sorry,? but\b",
    r"^[\s#*>]*i (?:must )?apologi[sz]e,? but\b",
    (r"^[\s#*>]*(?:i'?m|i am) (?:very |so |truly )?sorry,? (?:but )?i (?:can(?:'|no)?t|cannot|"
     r"am unable to|won'?t|will not)\b"),
    (r"^[\s#*>]*(?:sorry|unfortunately),? (?:but )?i (?:can(?:'|no)?t|cannot|am unable to|"
     r"won'?t|will not)\b"),
    (r"^[\s#*>]*i (?:can(?:'|no)?t|cannot|am unable to|am not able to|won'?t) (?:help|assist|"
     r"fulfil+|comply|provide|write|create|complete|generate|produce)\b"),
    r"作为(?:一个|一名)?(?:人工智能|AI)(?:语言模型|助手|模型)",
    r"^[\s#*>]*(?:很|非常)?(?:抱歉|对不起)[，,]?(?:但是?)?我(?:无法|不能|没办法)",
    r"^[\s#*>]*我(?:无法|不能)(?:满足|完成|提供|协助|帮助|撰写|生成)",
)]


def refusal(text: str, head_chars: int = 300) -> str | None:
    """The refusal phrase that opens `text` (within `head_chars`), or None."""
    head = text.lstrip()[:head_chars]
    for pattern in _REFUSAL:
        m = pattern.search(head)
        if m:
            return m.group(0).strip()
    return None
