import pytest

from dataset_builder.core.instructions import (
    assign_required,
    chinese_numeral,
    extract_required_words,
)
from dataset_builder.selection import keep, parse_estimate


@pytest.mark.parametrize("prompt,words", [
    ("Write a 3000-word essay", 3000), ("write 3,000 words on X", 3000),
    ("请写一篇3000字的文章", 3000), ("a 10k words story", 10000), ("写一篇两千字的作文", 2000),
    ("写一篇2万字小说", 20000), ("写三千五百字", 3500), ("at least 2500 word report", 2500),
    ("between 1000 and 5,000 words", 5000), ("Write about cats", None), ("Top 10 cats", None),
])
def test_explicit_lengths(prompt, words):
    assert extract_required_words(prompt) == words


def test_chinese_numerals():
    assert [chinese_numeral(s) for s in ["十", "二十五", "一万", "一万五千", "三百"]] == \
        [10, 25, 10000, 15000, 300]
    assert chinese_numeral("abc") is None


def test_keep_and_sources():
    rows = assign_required([{"prompt": "Write 4000 words"}, {"prompt": "x", "required_words": 900},
                            {"prompt": "Write a poem"}])
    assert [r["required_words_source"] for r in rows] == ["rule", "given", None]
    assert keep(rows[0], 2000) == (True, None)
    assert keep(rows[1], 2000)[1].startswith("below_min_required_words")
    assert keep(rows[2], 2000) == (False, "required_words_unknown")
    assert parse_estimate("about 2,400") == 2400 and parse_estimate("none") is None


def test_llm_estimates_out_of_range_are_rejected_stated_lengths_are_not():
    est = {"prompt": "translate 'good morning'", "required_words": 123456,
           "required_words_source": "llm"}
    assert keep(est, 2000, 32000) == (False, "estimate_out_of_range: 123456 > 32000")
    assert keep({**est, "required_words": 3000}, 2000, 32000) == (True, None)
    stated = {"prompt": "Write 100,000 words", "required_words": 100000,
              "required_words_source": "rule"}
    assert keep(stated, 2000, 32000) == (True, None)


def test_languages_the_model_cannot_write_are_rejected_first():
    zh = {"prompt": "写一篇3000字的文章", "lang": "zh", "required_words": 3000}
    en = {"prompt": "Write 3000 words", "lang": "en", "required_words": 3000}
    assert keep(zh, 2000, None, ["en"]) == (False, "language_not_generated: zh not in ['en']")
    assert keep(en, 2000, None, ["en"]) == (True, None)
    assert keep(zh, 2000, None, []) == (True, None)          # empty: every language
