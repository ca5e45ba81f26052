"""count_words in both modes: legacy (as published, quirks included) and unicode."""
from __future__ import annotations

import re

import pytest

from dataset_builder.core.text import WORD_COUNT_MODES, count_words


def published_count_words(text):
    """LongBench-Write's pred.py counter."""
    return len(re.findall(r"[\u4e00-\u9fff]", text)) + len(re.findall(r"\b[a-zA-Z]+\b", text))


# ----------------------------------------------------------------------------- legacy

@pytest.mark.parametrize("text, n", [
    ("Hello world", 2),
    ("Hello, world! How are you?", 5),
    ("  spaced\tout\nwords  ", 3),
    ("中文字符", 4),
    ("我爱北京天安门。", 7),                 # punctuation does not count
    ("中文 and English", 4),
    ("don't", 2),                           # published: the apostrophe splits
    ("state-of-the-art", 4),                # published: hyphens split
    ("123 456", 0),                          # digits are not words
    ("GPT4 x2", 0),                         # letters glued to digits are not \b[a-zA-Z]+\b
    ("café naïve", 0),                      # accented Latin: no \b after the ASCII part
    ("Привет мир", 0),                       # Cyrillic is not counted
    ("ひらがな カタカナ", 0),                  # kana not counted
    ("한국어", 0),                            # hangul not counted
    ("㐀𠀀", 0),                              # CJK extension A/B are outside U+4E00..U+9FFF
    ("中文abc", 2),                          # published quirk: no \b between 中 and a
    ("U.S.A.", 3),
])
def test_legacy_cases(text, n):
    assert count_words(text, "legacy") == n
    assert count_words(text) == n           # legacy is the default


def test_legacy_equals_published_counter_on_benchmark_like_text():
    samples = [
        "请以“fall in love with tea culture”为题 写一篇300词的英语作文",
        "Write a 5000-word novel — chapter 1: 'The Sea'. It's dark; mother-in-law's house...",
        "混合 text with 数字 123 and émigré words, and—dashes",
        "\n\n## Heading\n- bullet one\n- bullet two\n\n第一章 开始",
    ]
    for s in samples:
        assert count_words(s, "legacy") == published_count_words(s)


@pytest.mark.parametrize("mode", WORD_COUNT_MODES)
@pytest.mark.parametrize("empty", ["", None, "   \n\t ", "。，！", "--- ... !!!"])
def test_empty_and_punctuation_only(mode, empty):
    assert count_words(empty, mode) == 0


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="word-count mode"):
        count_words("hello", "words")


# ----------------------------------------------------------------------------- unicode

@pytest.mark.parametrize("text, n", [
    ("Hello world", 2),
    ("don't", 1),                            # contraction: one word
    ("don\u2019t", 1),                       # typographic apostrophe
    ("isn\u02bct", 1),                       # modifier-letter apostrophe
    ("I'm sure they're fine", 4),
    ("state-of-the-art", 1),                 # hyphenated: one word
    ("mother-in-law's", 1),
    ("well\u2010known", 1),                  # U+2010 hyphen
    ("rock\u2019n\u2019roll", 1),
    ("'quoted' words", 2),                   # outer quotes are not part of the word
    ("students' books", 2),
    ("--a--", 1),
    ("Hello—world", 2),                      # an em dash separates
    ("a/b", 2),
    ("123 456", 2),                          # digits are words
    ("GPT-4o x2", 2),
    ("١٢٣", 1),                               # Arabic-Indic digits
    ("１２３ Ｈｅｌｌｏ", 2),                    # full-width digits and letters
    ("café naïve", 2),
    ("e\u0301te\u0301", 1),                  # combining accents stay inside the word
    ("Привет мир", 2),                        # Cyrillic
    ("Γειά σου κόσμε", 3),                    # Greek
    ("مرحبا بالعالم", 2),                     # Arabic
    ("नमस्ते दुनिया", 2),                       # Devanagari (vowel signs are marks)
    ("中文字符", 4),
    ("中文abc", 3),                           # CJK then Latin: the Latin word counts
    ("abc中文", 3),
    ("日本語の文章です", 8),                   # kanji + hiragana, one per character
    ("ひらがな", 4),
    ("カタカナ", 4),
    ("ｶﾀｶﾅ", 4),                             # half-width katakana
    ("한국어 문장", 5),                        # hangul syllables, one per character
    ("ㄱ", 1),                                # compatibility jamo
    ("㐀", 1),                                # CJK extension A
    ("𠀀", 1),                                # CJK extension B (astral plane)
    ("豈", 1),                                # CJK compatibility ideograph U+F900
    ("々〇", 2),                              # iteration mark and ideographic zero
    ("我爱北京天安门。", 7),
    ("混合 text 和 words", 5),
])
def test_unicode_cases(text, n):
    assert count_words(text, "unicode") == n


def test_unicode_counts_at_least_legacy_on_english_and_chinese_prose():
    # Unicode counts every word legacy counts except where it joins (don't, x-y) pieces.
    zh = "人工智能正在改变世界，它影响着每一个行业。" * 3
    assert count_words(zh, "unicode") == count_words(zh, "legacy")
    en = "The quick brown fox jumps over the lazy dog near the river bank " * 5
    assert count_words(en, "unicode") == count_words(en, "legacy") == 65


def test_unicode_scales_linearly():
    para = "Long-form writing, isn't it? 长文本写作。"
    assert count_words(para * 100, "unicode") == 100 * count_words(para, "unicode")
