"""run_instruction's fault handling, driven by a scripted engine (pure control flow; the real
engine path is tested in tests/integration)."""
import asyncio

from dataset_builder.agentwrite import AgentWriteConfig, Journal, run_instruction
from dataset_builder.llm import Completion, EngineError
from tests.helpers import PLAN

INST = {"id": "abc", "prompt": "Write a 600-word essay on rivers.", "source": "t", "lang": "en",
        "required_words": 600}


class Scripted:
    """Answers plan requests (regex set) and write requests from two scripts."""

    def __init__(self, plans, writes):
        self.plans, self.writes, self.calls = list(plans), list(writes), []

    async def chat(self, messages, sampling):
        self.calls.append(sampling)
        item = (self.plans if sampling.regex else self.writes).pop(0)
        if isinstance(item, Exception):
            raise item
        text, reason = item if isinstance(item, tuple) else (item, "stop")
        return Completion(text, reason, 100, 50, 0)


def run(engine, tmp_path, **cfg):
    c = AgentWriteConfig(min_paragraph_words=100, max_paragraph_words=1000, **cfg)
    return asyncio.run(run_instruction(engine, INST, c, str(tmp_path / "j")))


def test_happy_path_and_length_cut_recorded(tmp_path):
    e = Scripted([PLAN], ["First paragraph.", ("Second, cut off", "length")])
    res = run(e, tmp_path)
    rec = res["record"]
    assert res["status"] == "ok" and rec["paragraphs"] == ["First paragraph.", "Second, cut off"]
    assert rec["finish_reasons"] == ["stop", "stop", "length"] and rec["resumed_steps"] == 0
    assert e.calls[1].max_tokens == e.calls[2].max_tokens > 300  # budget -> max_tokens


def test_invalid_plans_are_retried_then_rejected(tmp_path):
    bad = "Paragraph 1 - Main Point: x - Word Count: 5 words\n"
    e = Scripted([bad, "", (PLAN[:30], "length")], [])
    res = run(e, tmp_path, plan_retries=3)
    assert res["status"] == "reject" and res["stage"] == "plan" and len(e.calls) == 3
    assert "plan_cut_at_max_tokens" in res["reason"]


def test_plan_retry_succeeds(tmp_path):
    e = Scripted(["garbage", PLAN], ["a", "b"])
    res = run(e, tmp_path)
    assert res["status"] == "ok" and res["record"]["plan_attempts"] == 2


def test_empty_refusal_and_engine_errors_are_bounded(tmp_path):
    e = Scripted([PLAN], ["", "I'm sorry, I cannot help with that.", EngineError("boom")])
    res = run(e, tmp_path, step_retries=2)
    assert res == {"status": "reject", "id": "abc", "stage": "write_step_1",
                   "reason": "engine_error: boom"}
    assert len(e.calls) == 4  # 1 plan + 3 attempts at step 1, no more


def test_prompt_too_long_is_not_retried(tmp_path):
    e = Scripted([EngineError("prompt_too_long: 9000 tokens >= max_model_len 4096")], [])
    res = run(e, tmp_path)
    assert res["stage"] == "plan" and "prompt_too_long" in res["reason"] and len(e.calls) == 1


def test_resume_skips_journaled_steps_and_redoes_changed_ones(tmp_path):
    e = Scripted([PLAN], ["one", "two"])
    first = run(e, tmp_path)["record"]
    again = Scripted([], [])
    res = run(again, tmp_path)
    assert again.calls == [] and res["record"]["paragraphs"] == first["paragraphs"]
    assert res["record"]["resumed_steps"] == 3
    # a journaled step whose prompt no longer matches (layout changed) is written again
    changed = Scripted([], ["new one", "new two"])
    res = run(changed, tmp_path, layout="append")
    assert len(changed.calls) == 2 and res["record"]["paragraphs"] == ["new one", "new two"]
    assert Journal(str(tmp_path / "j"), "abc").load()[1]["text"] == "new one"


def test_penalties_reach_write_steps_but_not_the_plan(tmp_path):
    # The plan's fixed parts ("Paragraph 2 - Main Point:") must repeat under the regex, so a
    # repetition penalty there would fight the constraint; write steps get it.
    e = Scripted([PLAN], ["First paragraph.", "Second paragraph."])
    res = run(e, tmp_path, repetition_penalty=1.15, frequency_penalty=0.3)
    assert res["status"] == "ok"
    plan, *writes = e.calls
    assert (plan.repetition_penalty, plan.frequency_penalty) == (1.0, 0.0)
    assert [(w.repetition_penalty, w.frequency_penalty) for w in writes] == [(1.15, 0.3)] * 2
