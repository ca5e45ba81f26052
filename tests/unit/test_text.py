from dataset_builder.core.text import count_words, detect_lang, normalize_prompt, stable_id


def test_legacy_count_matches_published_rule():
    assert count_words("Hello, world! It's 2024.") == 4  # Hello world It s
    assert count_words("你好世界 hello") == 5
    assert count_words("") == 0 and count_words(None) == 0


def test_ids_and_lang():
    assert stable_id("Write  About Cats") == stable_id("write about cats")
    assert normalize_prompt("Ａ  b") == "a b"
    assert detect_lang("写一篇文章 about") == "zh" and detect_lang("Write an essay") == "en"


def test_unicode_mode_numbers_contractions_and_scripts():
    text = "1,000 people and 3.14 pies at 10:30, don't state-of-the-art"
    assert count_words(text, "unicode") == 9
    assert count_words("ㄅㄆㄇ かな 한국", "unicode") == 7
    assert count_words(text) == 10  # legacy: letter runs only, split at ' and -
