"""Post-processing of AgentWrite paragraphs (pure functions, no Ray)."""
from __future__ import annotations

from dataset_builder.curate.postprocess import (
    EDIT_KINDS,
    clean,
    heading_text,
    normalize_whitespace,
    split_paragraphs,
)

BODY = "Rome was founded, according to legend, in 753 BC by Romulus."


def test_plan_line_and_labels_removed_text_kept():
    c = clean([
        "Paragraph 1 - Main Point: The founding of Rome - Word Count: 400 words\n" + BODY,
        "**Paragraph 2:** The Republic replaced the kings.",
        "Paragraph 3 -\nThe Empire rose under Augustus.",
    ])
    assert c.paragraphs == [BODY, "The Republic replaced the kings.",
                            "The Empire rose under Augustus."]
    assert c.edits["plan_line"] == 1 and c.edits["paragraph_label"] == 2


def test_word_count_notes_and_main_point_lines():
    c = clean([f"Main Point: founding\n{BODY} (Word count: 412)\nWord Count: 400 words",
               "The end. (approx. 300 words)", "文本在这里。（约500字）\n字数要求：500字"])
    assert c.paragraphs == [BODY, "The end.", "文本在这里。"]
    assert c.edits["word_count_note"] == 5 and c.edits["main_point_line"] == 1


def test_chinese_plan_line():
    c = clean(["段落1 - 主要内容：介绍罗马 - 字数要求：500字\n罗马是一座古城。"])
    assert c.paragraphs == ["罗马是一座古城。"]
    assert c.edits["plan_line"] == 1


def test_plan_echo_removed_only_as_a_standalone_line():
    plan = [{"main_point": "Describe the fall of the western empire", "words": 300}]
    c = clean(["Describe the fall of the western empire.\nThe western empire fell in 476.",
               "We describe the fall of the western empire in detail here."], plan)
    assert c.paragraphs[0] == "The western empire fell in 476."
    assert c.paragraphs[1].startswith("We describe")
    assert c.edits["plan_echo"] == 1


def test_repeated_subtitles_collapsed_first_kept():
    c = clean(["# The History of Rome\n\n" + BODY, "# The History of Rome\n\nMore text.",
               "**The History of Rome**\nEven more.", "## Later years\nLast."])
    assert c.response.count("The History of Rome") == 1
    assert c.paragraphs[0].startswith("# The History of Rome")
    assert c.paragraphs[3] == "## Later years\nLast."
    assert c.edits["repeated_subtitle"] == 2


def test_ordinary_text_is_untouched():
    texts = ["He died in Rome (476).", "Paragraph 5 of the constitution says so.",
             "Section 3: The Economy", "- a list item\n  - nested item", "## Part 1: Background"]
    c = clean(texts)
    assert c.paragraphs == texts
    assert sum(c.edits.values()) == 0 and set(c.edits) == set(EDIT_KINDS)


def test_whitespace_normalized():
    assert normalize_whitespace("a  b\u200b \r\nc\t\t d  \n\n\n\n  e ") == "a b\nc d\n\n  e"
    assert normalize_whitespace("\ufeff\n\n x") == "x"


def test_assembly_joins_non_empty_paragraphs_and_keeps_positions():
    c = clean(["First.", "Paragraph 2 - Main Point: x - Word Count: 10 words", "Third."])
    assert c.paragraphs == ["First.", "", "Third."]
    assert c.response == "First.\n\nThird."
    assert split_paragraphs(c.response) == ["First.", "Third."]


def test_heading_text():
    assert heading_text("## Title ##") == "Title"
    assert heading_text("**Bold title**") == "Bold title"
    assert heading_text("Some **bold** text") is None
