"""LongWrite-Ruler's prompt sets: the published prompts verbatim at the published lengths, the
same prompts with another number at other lengths, chosen by language."""
import json

from eval.config import REPO_ROOT, RULER_FILE
from eval.ruler import ruler_items


def test_published_prompts_are_used_verbatim_at_the_published_lengths():
    published = [json.loads(line) for line in (REPO_ROOT / RULER_FILE).read_text().splitlines()]
    assert len(published) == 48
    items = ruler_items(sorted({r["length"] for r in published}))
    assert sorted(i["prompt"] for i in items) == sorted(r["prompt"] for r in published)
    assert len({i["id"] for i in items}) == 48


def test_other_lengths_and_languages():
    items = ruler_items([100, 4000], languages=["en"])
    assert len(items) == 8 and {i["lang"] for i in items} == {"en"}
    assert items[0]["prompt"] == "Write a 100-word China travel guide"
    assert items[1]["prompt"] == "Write a 4000-word China travel guide"
    assert [i["required_length"] for i in items[:2]] == [100, 4000]
    assert len(ruler_items([100], n_prompts=2, languages=["zh"])) == 2
    project = ruler_items([1000], prompt_set="project")
    assert len(project) == 8 and "lighthouse keeper" in project[4]["prompt"]
