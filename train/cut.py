"""The length cut of the length sweep (the paper's Section 2 experiment): SFT answers capped at
`cap` words, cut where the text ends a paragraph or a sentence, so a cut answer still ends and
its row still trains the end-of-turn token.

    cut_answer(text, 250)          # whole paragraphs while the total stays <= 250 words
    cut_rows(table, 250)           # LongWriter-6k records with the assistant turn cut
    end_at_sentence(text)          # a trailing unfinished sentence dropped (cut_rows' default)

Why `end_at_sentence`: an AgentWrite step stopped at its max_tokens ends mid-sentence (the demo
config caps every step at 384 tokens, so every paragraph of the committed rows does), and an
answer that stops mid-sentence teaches the end-of-turn token where no text ends: measured on
the base demo model, the end-of-turn token after such endings cost 12-24 nats, after sentence
ends 0.4-7 (docs/BENCHMARKS.md, "The length sweep").

Words are counted as the evaluation counts them (core.text.count_words, legacy by default), so
"an arm trained on answers of at most 250 words" means the same number as the eval's lengths.
"""
from __future__ import annotations

import re

import pyarrow as pa

from dataset_builder.core.text import count_words

# A sentence ends at . ! ? (or their CJK forms), optionally followed by closing quotes or
# brackets, then whitespace or the end of the text.
_SENTENCE_END = re.compile(r"[.!?。！？][\"'”’)\]]*(?=\s|$)")
_WORD = re.compile(r"\S+")


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def _cut_paragraph(paragraph: str, cap: int, mode: str) -> str:
    """The first paragraph alone is over the cap: its longest prefix that ends a sentence and
    stays within the cap; if no sentence ends in time, the prefix of `cap` counted words."""
    best = ""
    for m in _SENTENCE_END.finditer(paragraph):
        head = paragraph[:m.end()]
        if count_words(head, mode) > cap:
            break
        best = head
    if best:
        return best.strip()
    out = ""
    for m in _WORD.finditer(paragraph):   # whitespace tokens: add one while the count allows
        head = paragraph[:m.end()]
        if count_words(head, mode) > cap:
            break
        out = head
    return out.strip()


def cut_answer(text: str, cap: int, mode: str = "legacy") -> str:
    """`text` cut to at most `cap` words: whole paragraphs (split on blank lines) while the
    total stays within the cap; if the first paragraph alone is longer, it is cut at its last
    sentence end within the cap (at the cap-th word if none). Paragraphs are joined by one
    blank line, as AgentWrite joins them."""
    if cap <= 0:
        raise ValueError(f"cap must be a positive number of words, got {cap}")
    paragraphs = _paragraphs(text or "")
    kept: list[str] = []
    total = 0
    for p in paragraphs:
        n = count_words(p, mode)
        if total + n > cap:
            break
        kept.append(p)
        total += n
    if not kept and paragraphs:
        first = _cut_paragraph(paragraphs[0], cap, mode)
        kept = [first] if first else []
    return "\n\n".join(kept)


def end_at_sentence(text: str) -> str:
    """`text` without a trailing unfinished sentence: the last paragraph cut after its last
    sentence end; a last paragraph with no sentence end is dropped, unless it is the only one
    (then the text is returned as it is: there is no better place to end)."""
    paragraphs = _paragraphs(text or "")
    while paragraphs:
        last = paragraphs[-1]
        ends = list(_SENTENCE_END.finditer(last))
        if ends and ends[-1].end() == len(last):
            break
        if ends:
            paragraphs[-1] = last[:ends[-1].end()].strip()
            break
        if len(paragraphs) == 1:
            break
        paragraphs.pop()
    return "\n\n".join(paragraphs)


def cut_rows(table: pa.Table, cap: int | None, mode: str = "legacy",
             sentence_end: bool = True) -> pa.Table:
    """LongWriter-6k records (core.records.LONGWRITER) with each assistant answer cut to `cap`
    words (None: no cap) and, with `sentence_end`, ended at a sentence end (`end_at_sentence`);
    `response_words` recounted; rows whose answer is cut to nothing are dropped (the caller
    counts them: `table.num_rows - out.num_rows`)."""
    rows = table.to_pylist()
    out = []
    for r in rows:
        answer = r["messages"][-1]["content"]
        if cap is not None:
            answer = cut_answer(answer, cap, mode)
        if sentence_end:
            answer = end_at_sentence(answer)
        if not answer and (cap is not None or sentence_end):
            continue
        if answer != r["messages"][-1]["content"]:
            r = {**r, "messages": [*r["messages"][:-1],
                                   {"role": "assistant", "content": answer}]}
        r["response_words"] = count_words(r["messages"][-1]["content"], mode)
        out.append(r)
    return pa.Table.from_pylist(out, schema=table.schema)
