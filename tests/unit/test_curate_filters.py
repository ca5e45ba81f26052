"""Validation and quality filters (pure functions, no Ray)."""
from __future__ import annotations

import random

import pytest

from dataset_builder.core.text import count_words
from dataset_builder.curate.filters import (
    DuplicateParagraphs,
    EmptyParagraph,
    FilterChain,
    FilterConfig,
    LanguageMismatch,
    LengthAdherence,
    MinWords,
    Refusal,
    Repetition,
    Truncated,
    build_filters,
    length_score,
    repeated_ngram_fraction,
)
from dataset_builder.curate.validate import validate

rng = random.Random(3)
VOCAB = [a + b + c for a in "bdfgklmnprst" for b in "aeiou" for c in ("n", "r", "sk", "lt")]


def prose(n: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n)) + "."


def row(paragraphs=None, prompt="Write a long essay about rivers.", required=None, finish=None):
    paragraphs = paragraphs if paragraphs is not None else [prose(100) for _ in range(4)]
    response = "\n\n".join(paragraphs)
    return {"id": "r1", "prompt": prompt, "paragraphs": paragraphs, "response": response,
            "response_words": count_words(response), "required_words": required,
            "finish_reasons": finish if finish is not None else ["stop"] * (len(paragraphs) + 1)}


def category(result):
    keep, reason = result
    return "kept" if keep else reason.split(":")[0]


# --- validation ------------------------------------------------------------------------------

def raw(**over):
    base = {"id": "a", "prompt": "Write a story.", "paragraphs": ["One.", "Two."],
            "response": "One.\n\nTwo.", "required_words": 500, "finish_reasons": ["stop"] * 3,
            "plan": [{"main_point": "x", "words": 10}], "lang": "en"}
    return {**base, **over}


@pytest.mark.parametrize("over,expected", [
    ({"prompt": None}, "missing_field"),
    ({"id": None}, "missing_field"),
    ({"paragraphs": None, "response": None}, "missing_field"),
    ({"required_words": "500"}, "bad_type"),
    ({"required_words": True}, "bad_type"),
    ({"required_words": -3}, "bad_type"),
    ({"required_words": 10**30}, "bad_type"),
    ({"prompt": 42}, "bad_type"),
    ({"paragraphs": "One. Two."}, "bad_type"),
    ({"paragraphs": ["ok", 3]}, "bad_type"),
    ({"finish_reasons": "stop"}, "bad_type"),
    ({"plan": [1, 2]}, "bad_type"),
    ({"prompt": "   "}, "empty_prompt"),
    ({"paragraphs": ["", "  "], "response": ""}, "empty_response"),
    ({"paragraphs": None, "response": ""}, "empty_response"),
    ({"paragraphs": ["x" * 1_000_001]}, "response_too_long"),
    ({"prompt": "p" * 1_000_001}, "prompt_too_long"),
    ({"paragraphs": ["bad \udcff byte"]}, "broken_utf8"),       # surrogateescape'd input
    ({"prompt": "lone \ud800 surrogate"}, "broken_utf8"),
    ({"model": "m\udcfe"}, "broken_utf8"),
    ({"paragraphs": ["mojibake \ufffd\ufffd"]}, "broken_utf8"),
])
def test_validate_rejects_with_reason(over, expected):
    row_, reason = validate(raw(**over), max_response_chars=500_000)
    assert row_ is None and reason.split(":")[0] == expected


def test_validate_never_raises_on_junk():
    for junk in (None, 3, "text", [], {"id": object(), "prompt": object()}):
        assert validate(junk, 100)[0] is None


def test_validate_normalizes_a_good_row():
    row_, reason = validate(raw(paragraphs=None, response="Only text.", plan=[
        {"main_point": "m", "words": "7"}, {"main_point": "n", "words": 10**40}]), 1000)
    assert reason == "" and row_["paragraphs"] == ["Only text."]
    assert row_["plan"] == [{"main_point": "m", "words": None}, {"main_point": "n", "words": None}]


# --- filters ---------------------------------------------------------------------------------

def test_length_score_matches_longbench_write():
    assert length_score(1000, 1000) == 100
    assert length_score(1000, 500) == pytest.approx(50)      # 1 - (2 - 1) / 2
    assert length_score(1000, 2500) == pytest.approx(50)     # 1 - (2.5 - 1) / 3
    assert length_score(1000, 4000) == 0 and length_score(1000, 0) == 0


def test_min_words_and_length_adherence():
    r = row([prose(100) for _ in range(3)], required=300)
    assert category(MinWords(300)(r)) == "kept"
    assert category(MinWords(2000)(r)) == "too_short"
    assert category(LengthAdherence(50)(r)) == "kept"
    assert category(LengthAdherence(50)({**r, "required_words": 3000})) == "length_adherence"
    assert category(LengthAdherence(50)({**r, "required_words": None})) == "kept"


def test_truncation_last_or_any_step():
    last = row(finish=["stop"] * 4 + ["length"])
    middle = row(finish=["stop", "length", "stop", "stop", "stop"])
    plan_only = row(finish=["length", "stop", "stop", "stop", "stop"])
    assert category(Truncated("last")(last)) == "truncated"
    assert category(Truncated("last")(middle)) == "kept"
    assert category(Truncated("any")(middle)) == "truncated"
    assert category(Truncated("any")(plan_only)) == "kept"
    assert category(Truncated("last")(row(finish=[]))) == "kept"


@pytest.mark.parametrize("opening,refused", [
    ("I'm sorry, but I can't write that.", True),
    ("I apologize, but this request is not something I do.", True),
    ("As an AI language model, I do not have opinions.", True),
    ("I cannot help with writing this essay.", True),
    ("抱歉，我无法完成这个请求。", True),
    ("作为一个人工智能语言模型，我不能写这篇文章。", True),
    ('"I\'m sorry, but I can\'t stay," she said, turning to the door.', False),
    ("The apology came late, but it came.", False),
])
def test_refusal(opening, refused):
    r = row([opening + " " + prose(50), prose(100)])
    assert category(Refusal()(r)) == ("refusal" if refused else "kept")


def test_language_mismatch():
    zh_prompt = "请写一篇关于长江的文章。"
    en = row(prompt=zh_prompt)
    assert category(LanguageMismatch()(en)) == "language_mismatch"
    zh = row(["长江是中国最长的河流。" * 20], prompt=zh_prompt)
    assert category(LanguageMismatch()(zh)) == "kept"
    assert category(LanguageMismatch()(row())) == "kept"


def test_empty_paragraph():
    assert category(EmptyParagraph(10)(row([prose(50), "", prose(50)]))) == "empty_paragraph"
    assert category(EmptyParagraph(10)(row([prose(50), "Too short.", prose(50)]))) == \
        "empty_paragraph"
    assert category(EmptyParagraph(10)(row())) == "kept"


def test_duplicate_paragraphs_and_ngram_repetition():
    p = prose(80)
    assert category(DuplicateParagraphs(0.1)(row([p, prose(80), p]))) == "duplicate_paragraphs"
    assert category(DuplicateParagraphs(0.1)(row())) == "kept"
    loop = " ".join(["and then the story goes on and on like this"] * 30)
    assert category(Repetition(10, 0.1)(row([prose(100), loop]))) == "repetition"
    assert category(Repetition(10, 0.1)(row())) == "kept"


def test_repeated_ngram_fraction():
    toks = [f"t{i}" for i in range(100)]
    assert repeated_ngram_fraction(toks, 5) == 0
    assert repeated_ngram_fraction(toks + toks, 5) == pytest.approx(0.5)
    assert repeated_ngram_fraction(toks[:5], 5) == 0


def test_chain_first_reject_wins_and_counts():
    chain = FilterChain([Truncated("last"), MinWords(2000)])
    short_truncated = row(finish=["stop"] * 4 + ["length"])
    assert category(chain(short_truncated)) == "truncated"
    assert category(chain(row())) == "too_short"
    assert chain.rejected == {"truncated": 1, "too_short": 1} and chain.seen == 2


def test_build_filters_respects_config():
    names = [f.name for f in build_filters(FilterConfig()).filters]
    assert names[0] == "truncated" and "length_adherence" in names
    off = build_filters(FilterConfig(min_response_words=0, min_length_score=None,
                                     truncation="off", check_language=False,
                                     check_refusal=False, min_paragraph_words=0))
    assert [f.name for f in off.filters] == ["duplicate_paragraphs", "repetition"]
    keep, reason = off(row(finish=["stop"] * 4 + ["length"]))
    assert keep and reason == ""
