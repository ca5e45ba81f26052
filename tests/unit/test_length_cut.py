"""The length sweep's cut: whole paragraphs within the cap, else the first paragraph at a
sentence end, else at the cap-th word; words counted as the evaluation counts them."""
import pyarrow as pa
import pytest

from dataset_builder.core.records import LONGWRITER
from dataset_builder.core.text import count_words
from train.cut import cut_answer, cut_rows, end_at_sentence


def words(n: int, word: str = "owl") -> str:
    return " ".join([word] * n)


def test_keeps_whole_paragraphs_while_the_total_stays_within_the_cap():
    text = "\n\n".join([words(100) + ".", words(100, "fox") + ".", words(100, "elk") + "."])
    assert cut_answer(text, 250) == "\n\n".join([words(100) + ".", words(100, "fox") + "."])
    assert cut_answer(text, 300) == text               # exactly the cap: all of it
    assert cut_answer(text, 10_000) == text
    # a paragraph that does not fit ends the answer: no later, shorter one is picked up
    text2 = "\n\n".join([words(100) + ".", words(200, "fox") + ".", words(10, "elk") + "."])
    assert cut_answer(text2, 250) == words(100) + "."


def test_a_first_paragraph_over_the_cap_is_cut_at_its_last_sentence_end():
    s1, s2, s3 = words(40) + ".", words(40, "fox") + "!", words(40, "elk") + "?"
    text = f"{s1} {s2} {s3}\n\n{words(10, 'yak')}."
    assert cut_answer(text, 100) == f"{s1} {s2}"
    assert count_words(cut_answer(text, 100)) == 80
    quoted = f'{words(5)} said "stop." {words(50, "fox")}.'
    assert cut_answer(quoted, 20) == f'{words(5)} said "stop."'  # the closing quote is kept


def test_no_sentence_end_within_the_cap_cuts_at_the_cap_word():
    text = words(300) + "."
    out = cut_answer(text, 250)
    assert count_words(out) == 250 and out == words(250)


def test_words_are_counted_as_the_evaluation_counts_them():
    # legacy counting ignores numbers and counts CJK characters one each
    text = "Year 2024 was long. " + "好" * 30 + "。\n\n" + words(5)
    assert count_words(text) == 3 + 30 + 5
    assert cut_answer(text, 33) == "Year 2024 was long. " + "好" * 30 + "。"
    assert cut_answer(text, 38) == text.strip()


def test_a_bad_cap_is_an_error():
    for cap in (0, -5):
        with pytest.raises(ValueError, match="cap must be a positive number of words"):
            cut_answer("Some text.", cap)


def test_cut_rows_cuts_the_assistant_turn_and_recounts():
    def row(i, answer):
        return {"id": str(i), "messages": [{"role": "user", "content": "Write."},
                                           {"role": "assistant", "content": answer}],
                "source": "t", "lang": "en", "required_words": 500, "response_words": 0,
                "length_score": None, "plan": [], "model": "m", "config_hash": "h",
                "layout": "paper"}
    table = pa.Table.from_pylist([row(1, words(100) + ".\n\n" + words(100) + "."),
                                  row(2, "")], schema=LONGWRITER)
    cut = cut_rows(table, 150)
    assert cut.num_rows == 1 and cut.schema.equals(LONGWRITER)   # the empty answer is dropped
    r = cut.to_pylist()[0]
    assert r["messages"][1]["content"] == words(100) + "." and r["response_words"] == 100
    assert r["messages"][0]["content"] == "Write."
    uncut = cut_rows(table, None, sentence_end=False)
    assert uncut.num_rows == 2 and uncut.to_pylist()[0]["response_words"] == 200
    # a step stopped at its max_tokens: the uncut answer loses its unfinished sentence
    table = pa.Table.from_pylist([row(1, words(10) + ".\n\n" + words(8) + ". And then the")],
                                 schema=LONGWRITER)
    r = cut_rows(table, None).to_pylist()[0]
    assert r["messages"][1]["content"] == words(10) + ".\n\n" + words(8) + "."
    assert r["response_words"] == 18


def test_end_at_sentence_drops_the_unfinished_tail():
    done = words(5) + ".\n\n" + words(4) + '!"'
    assert end_at_sentence(done) == done                                   # already ends
    assert end_at_sentence(words(5) + ". Then " + words(3)) == words(5) + "."
    # a last paragraph with no sentence end goes; a lone one stays (no better end)
    assert end_at_sentence(words(5) + ".\n\n" + words(6)) == words(5) + "."
    assert end_at_sentence(words(6)) == words(6)
    # cut_answer keeps whole paragraphs; the last kept one may itself stop mid-sentence
    text = words(5) + ". More " + words(3) + "\n\n" + words(50) + "."
    assert cut_answer(text, 20) == words(5) + ". More " + words(3)
    assert end_at_sentence(cut_answer(text, 20)) == words(5) + "."
