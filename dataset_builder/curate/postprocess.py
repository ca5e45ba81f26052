"""Post-processing of AgentWrite output: paragraphs -> one clean response (pure functions).

What the writing model tends to echo back from its prompt, and what is removed:
  - the plan line itself: "Paragraph 3 - Main Point: ... - Word Count: 400 words"
    (Chinese: "段落3 - 主要内容：... - 字数要求：400字");
  - a "Paragraph 3:" / "**Paragraph 3 -**" label in front of the text (the text is kept);
  - word-count notes: "Word Count: 400 words", "(Word count: 412)", "（约400字）";
  - "Main Point: ..." lines and lines that repeat a plan main point verbatim;
  - a subtitle (markdown heading or bold-only line) that an earlier paragraph already had,
    typically the document title restated at the top of every step;
  - whitespace noise: CRLF, zero-width characters, trailing spaces, runs of spaces, 3+ newlines.

`clean(paragraphs, plan)` returns the cleaned paragraphs, the assembled response (paragraphs
joined by a blank line, as the generation stage joins them) and how many edits of each kind it
made, so the report can say how often the model echoed its instructions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

EDIT_KINDS = ("plan_line", "paragraph_label", "word_count_note", "main_point_line",
              "plan_echo", "repeated_subtitle")

_PARA = r"(?:paragraph|段落)"  # the words AgentWrite's plan format uses
_NUM = r"\s*\d*\s*"
# A plan line: "Paragraph N" and a "Main Point" / "Word Count" field on the same line.
_PLAN_LINE = re.compile(
    rf"^[\s#*>\-]*{_PARA}{_NUM}.*(?:main\s*point|word\s*count|主要内容|字数要求|字数)\s*[:：]",
    re.IGNORECASE)
# A label at the start of a line: "Paragraph 3 -", "**Paragraph 3:**", "段落3：".
_LABEL = re.compile(
    rf"^[\s#*>]*(?:{_PARA}\s*\d+|第\s*\d+\s*段)\s*(?:\*\*)?\s*[-–—:：.)]+\s*(?:\*\*)?\s*",
    re.IGNORECASE)
_LABEL_ONLY = re.compile(rf"^[\s#*>]*(?:{_PARA}\s*\d+|第\s*\d+\s*段)\s*(?:\*\*)?\s*[-–—:：.)]*"
                         r"\s*(?:\*\*)?\s*$", re.IGNORECASE)
_MAIN_POINT = re.compile(r"^[\s#*>\-]*(?:main\s*point|主要内容)\s*(?:\*\*)?\s*[:：]", re.IGNORECASE)
# Word-count notes: a whole line, or a bracketed note at the end of a line.
_WC_LINE = re.compile(
    r"^[\s#*>\-(\[（【]*(?:(?:approximate\s+|total\s+)?word\s*count|字数要求|字数|总字数)\s*"
    r"(?:\*\*)?\s*[:：]?\s*(?:\*\*)?\s*[~约≈]?\s*\d[\d,]*\s*(?:words?|字)?\s*[)\]）】]*\s*\.?$",
    re.IGNORECASE)
_APPROX = r"(?:approx(?:imately|\.)?\s*|about\s+|约|~|≈)?\s*"
_WC_TAIL = re.compile(  # needs "word count" before or "words" after the number: "(1999)" stays
    rf"\s*[(\[（【]\s*{_APPROX}(?:(?:word\s*count|字数)\s*[:：]?\s*{_APPROX}\d[\d,]*\s*"
    rf"(?:words?|字)?|\d[\d,]*\s*(?:words?|字))\s*[)\]）】]\s*$", re.IGNORECASE)
_HEADING = re.compile(r"^\s*(?:#{1,6}\s+(.+?)\s*#*|\*\*([^*]+)\*\*|__([^_]+)__)\s*$")
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
_INNER_SPACES = re.compile(r"(?<=\S)[ \t\u00a0\u3000]{2,}(?=\S)")
_BLANKS = re.compile(r"\n{3,}")


@dataclass
class Cleaned:
    paragraphs: list[str]
    response: str
    edits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EDIT_KINDS, 0))


def _key(text: str) -> str:
    """Comparison form of a short line: markdown, numbering and punctuation stripped, casefold."""
    text = re.sub(r"^[\s#*>\-\d.)]+", "", text)
    return " ".join(re.sub(r"[*_`\"'“”‘’:：.。,，!！?？]", " ", text).casefold().split())


def normalize_whitespace(text: str) -> str:
    """CRLF -> LF, zero-width characters dropped, trailing spaces stripped, runs of spaces
    inside a line collapsed (leading indentation kept), at most one blank line in a row."""
    text = _ZERO_WIDTH.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [_INNER_SPACES.sub(" ", line.rstrip()) for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip("\n").strip()


def heading_text(line: str) -> str | None:
    """The text of a markdown heading or bold-only line, else None."""
    m = _HEADING.match(line)
    return next((g for g in m.groups() if g), None) if m else None


def strip_plan_artifacts(text: str, main_points: set[str], edits: dict[str, int]) -> str:
    """Remove plan lines, labels, word-count notes and echoed main points from one paragraph."""
    out = []
    for line in text.split("\n"):
        if _PLAN_LINE.match(line):
            edits["plan_line"] += 1
            continue
        if _MAIN_POINT.match(line):
            edits["main_point_line"] += 1
            continue
        if _WC_LINE.match(line):
            edits["word_count_note"] += 1
            continue
        if _LABEL_ONLY.match(line):
            edits["paragraph_label"] += 1
            continue
        stripped = _LABEL.sub("", line, count=1)
        if stripped != line:
            edits["paragraph_label"] += 1
            line = stripped
        tail = _WC_TAIL.sub("", line)
        if tail != line:
            edits["word_count_note"] += 1
            line = tail
        if main_points and line.strip() and _key(line) in main_points:
            edits["plan_echo"] += 1
            continue
        out.append(line)
    return "\n".join(out)


def collapse_repeated_subtitles(paragraphs: list[str], edits: dict[str, int]) -> list[str]:
    """Drop a heading line that an earlier paragraph already had (keep the first one)."""
    seen: set[str] = set()
    result = []
    for para in paragraphs:
        kept, here = [], set()
        for line in para.split("\n"):
            title = heading_text(line)
            if title is not None:
                key = _key(title)
                if key and key in seen:
                    edits["repeated_subtitle"] += 1
                    continue
                here.add(key)
            kept.append(line)
        seen |= here
        result.append("\n".join(kept))
    return result


def clean(paragraphs: list[str], plan: list[dict] | None = None) -> Cleaned:
    """Clean every paragraph and assemble the response (non-empty paragraphs, blank-line joined).

    The returned `paragraphs` keep their positions (an emptied paragraph stays as "") so the
    filters can see that a write step produced nothing usable.
    """
    edits = dict.fromkeys(EDIT_KINDS, 0)
    main_points = {_key(p.get("main_point") or "") for p in plan or [] if isinstance(p, dict)}
    main_points.discard("")
    stage = [strip_plan_artifacts(normalize_whitespace(p or ""), main_points, edits)
             for p in paragraphs]
    stage = collapse_repeated_subtitles(stage, edits)
    final = [normalize_whitespace(p) for p in stage]
    return Cleaned(final, "\n\n".join(p for p in final if p), edits)


def split_paragraphs(response: str) -> list[str]:
    """Paragraph blocks of an assembled response (blank-line separated)."""
    return [b for b in re.split(r"\n\s*\n", response) if b.strip()]
