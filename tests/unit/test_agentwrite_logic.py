import re

import pytest
from transformers import AutoTokenizer

from dataset_builder import prompts
from dataset_builder.agentwrite import (
    AgentWriteConfig,
    parse_plan,
    plan_regex,
    step_sampling,
    validate_plan,
)

PLAN = [{"main_point": "Origins of the festival", "words": 600},
        {"main_point": "Customs - food, family", "words": 800},
        {"main_point": "Modern changes", "words": 600}]


def test_plan_regex_accepts_paper_format_and_parses_back():
    cfg = AgentWriteConfig(max_paragraphs=5)
    text = prompts.format_plan(PLAN) + "\n"
    assert re.fullmatch(plan_regex(cfg), text)
    assert parse_plan(text) == PLAN


def test_plan_regex_rejects_out_of_order_and_too_many():
    cfg = AgentWriteConfig(max_paragraphs=2)
    assert not re.fullmatch(plan_regex(cfg), prompts.format_plan(PLAN) + "\n")  # 3 > 2
    swapped = prompts.format_plan(PLAN).replace("Paragraph 2", "Paragraph 9") + "\n"
    assert not re.fullmatch(plan_regex(AgentWriteConfig()), swapped)


def test_validate_plan_bounds_and_total():
    cfg = AgentWriteConfig(min_paragraph_words=100, max_paragraph_words=1000, total_tolerance=0.2)
    assert validate_plan(PLAN, 2000, cfg) == (PLAN, None)
    assert validate_plan(PLAN, 5000, cfg)[1].startswith("plan_total_off")
    assert validate_plan([], 2000, cfg)[1].startswith("plan_paragraphs_out_of_range")
    big = [{"main_point": "One long chapter", "words": 5000}]
    assert "out_of_bounds" in validate_plan(big, None, cfg)[1]
    rescaled, reason = validate_plan(PLAN, 2600, AgentWriteConfig(rescale_plan=True,
                                                                  total_tolerance=0.05))
    assert reason is None and abs(sum(p["words"] for p in rescaled) - 2600) <= 3


def test_step_sampling_follows_budget():
    cfg = AgentWriteConfig(tokens_per_word=1.5, step_slack=2.0, max_step_tokens=4096)
    assert step_sampling(100, cfg, 1).max_tokens == 316
    forced = step_sampling(100, AgentWriteConfig(tokens_per_word=1.5, force_lengths=True), 1)
    assert forced.min_tokens == forced.max_tokens == 150 and forced.ignore_eos


def test_layouts_share_prefixes(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)

    def ids(msgs):
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    paras = ["First paragraph text.", "Second paragraph text."]
    plan_req = prompts.plan_messages("Task", 2600, 100, 1500)
    # append: step 1 extends the plan conversation (plan prompt + the plan as the model's turn),
    # and step 3's prompt starts with step 2's prompt + step 2's output
    p1 = ids(prompts.write_messages("Task", PLAN, [], "append", plan_req))
    plan_turn = ids(plan_req) + prompts.format_plan(PLAN)
    assert p1.startswith(plan_turn) and len(p1) - len(plan_turn) < 400
    p2 = ids(prompts.write_messages("Task", PLAN, paras[:1], "append", plan_req))
    p3 = ids(prompts.write_messages("Task", PLAN, paras, "append", plan_req))
    assert p2.startswith(p1 + paras[0]) and p3.startswith(p2 + paras[1])
    # the plan turn replays the model's raw plan when given (its KV is what the cache holds)
    raw = "Paragraph 1 - Main Point: Origins  - Word Count: 90 words\n"
    r1 = ids(prompts.write_messages("Task", PLAN, [], "append", plan_req, raw))
    assert r1.startswith(ids(plan_req) + raw)
    with pytest.raises(ValueError, match="plan request"):
        prompts.write_messages("Task", PLAN, [], "append")
    # paper: step 3's prompt shares instruction + plan + text so far (through paragraph 1)
    q2 = ids(prompts.write_messages("Task", PLAN, paras[:1], "paper"))
    q3 = ids(prompts.write_messages("Task", PLAN, paras, "paper"))
    common = len(q2[: q2.index(paras[0]) + len(paras[0])])
    assert q3[:common] == q2[:common]
    # ...and only a short tail (the step itself) follows the text so far
    tail = q3[q3.index(paras[1]) + len(paras[1]):]
    assert tail.startswith("\n\nNow write paragraph 3 (") and len(tail) < 200, tail


def test_plan_total_is_checked_after_clamping():
    """5 x 15,000 words for 100,000 passes the tolerance but would be written as 5 x 1,500."""
    cfg = AgentWriteConfig(rescale_plan=True, max_paragraph_words=1500)
    plan = [{"main_point": f"Part {i} of the history", "words": 15000} for i in range(5)]
    got, reason = validate_plan(plan, 100000, cfg)
    assert got is None and reason.startswith("plan_total_off_after_rescale: 7500")
    # within tolerance and within bounds after clamping: kept, budgets as written
    ok, _ = validate_plan([{"main_point": "A long opening scene", "words": 1600},
                           {"main_point": "The turn of events", "words": 1400}], 3000, cfg)
    assert [p["words"] for p in ok] == [1500, 1400]


@pytest.mark.parametrize("point,ok", [
    ("Worl C C 0111 1111111 1111", False), ("12345 67890", False), ("x", False),
    ("Origins of the festival", True), ("春节的起源与传说", True), ("Zölle und Handel", True)])
def test_main_points_must_be_text(point, ok):
    cfg = AgentWriteConfig()
    plan = [{"main_point": point, "words": 500}]
    _, reason = validate_plan(plan, None, cfg)
    assert (reason is None) == ok, reason
    assert validate_plan(plan, None, AgentWriteConfig(min_main_point_words=0))[1] is None
