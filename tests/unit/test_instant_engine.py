"""The instant backend (llm/instant_engine.py): valid plans and steps in the configured layout,
answers that are a function of (row, step), planted near-duplicates, the latency setting, the
marking of its outputs and training's refusal of them. The whole job on it: tests/integration/
test_scale.py."""
import asyncio

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_builder.agentwrite import AgentWriteConfig, parse_plan, run_instruction, validate_plan
from dataset_builder.core.text import count_words
from dataset_builder.llm import instant_engine as ie
from dataset_builder.llm import make_engine
from dataset_builder.llm.base import EngineConfig, EngineError, InstantConfig, Sampling
from eval.judge_prompt import JUDGE_SCHEMA, parse_judgement
from train.data import InstantDataError, read_conversations


def engine(**kw):
    return make_engine(EngineConfig(backend="instant", model="r", instant=InstantConfig(**kw)))


def ask(e, **s):
    return asyncio.run(e.chat([{"role": "user", "content": "x" * 400}], Sampling(**s)))


def test_plans_and_steps_are_valid_and_follow_the_budget():
    e = engine(paragraphs=6)
    for req in (600, 3000, 8999):
        c = ask(e, kind="plan", budget=req, row=f"r{req}")
        plan, why = validate_plan(parse_plan(c.text), req, AgentWriteConfig(min_paragraph_words=
                                                                             100))
        assert why is None and len(plan) == 6 and sum(p["words"] for p in plan) == req
    step = ask(e, kind="write", budget=137, row="r1", step=3)
    assert count_words(step.text) == 137 and step.finish_reason == "stop"
    assert step.output_tokens == round(137 * 1.3) and step.prompt_tokens == 100
    assert ask(e, kind="estimate", row="r1").text.isdigit()


def test_answers_are_a_function_of_row_and_step():
    a, b = engine(), engine()
    same = dict(kind="write", budget=80, row="r1", step=2)
    assert ask(a, **same).text == ask(b, **same).text
    assert ask(a, **same).text != ask(a, **{**same, "step": 3}).text
    assert ask(a, **same).text != ask(a, **{**same, "row": "r2"}).text


def test_planted_rows_share_their_groups_text_but_one_word():
    e = engine(duplicate_share=0.05, duplicate_groups=2)
    rows = [f"row-{i}" for i in range(2000)]
    planted = [r for r in rows if e.planted(r) is not None]
    assert 0.03 < len(planted) / len(rows) < 0.07   # fixed by the hash: no sampling luck
    g0 = [r for r in planted if e.planted(r) == 0][:2]
    t = [ask(e, kind="write", budget=200, row=r, step=1).text.split() for r in g0]
    assert 1 <= sum(x != y for x, y in zip(*t)) <= 2     # one word changed in each
    p = [ask(e, kind="plan", budget=1000, row=r).text for r in g0]
    assert p[0] == p[1]
    other = next(r for r in rows if e.planted(r) is None)
    assert ask(e, kind="write", budget=200, row=other, step=1).text.split()[:20] != t[0][:20]
    assert sum(engine(duplicate_share=0).planted(r) is not None for r in rows) == 0


def test_judgement_is_well_formed():
    c = ask(engine(), kind="judge", row="r1", json_schema=JUDGE_SCHEMA)
    ratings, err = parse_judgement(c.text)
    assert err is None and ratings


def test_latency_setting_waits_before_each_answer(monkeypatch):
    waits = []

    async def fake_sleep(s):
        waits.append(s)
    monkeypatch.setattr(ie.asyncio, "sleep", fake_sleep)
    ask(engine(latency_s=0.25), kind="write", budget=5, row="r")
    ask(engine(), kind="write", budget=5, row="r")
    assert waits == [0.25]


def test_bad_settings_and_requests_fail_in_one_line():
    with pytest.raises(EngineError, match="duplicate_share"):
        engine(duplicate_share=2)
    with pytest.raises(EngineError, match="instant backend"):
        ask(engine(), prompt_logprobs=True)


def test_a_whole_instruction_and_its_marking(tmp_path):
    cfg = AgentWriteConfig(min_paragraph_words=20)
    inst = {"id": "i1", "prompt": "Write a 400-word essay.", "lang": "en", "required_words": 400}
    runs = [asyncio.run(run_instruction(engine(), inst, cfg, str(tmp_path / f"j{k}")))
            for k in range(2)]
    rec = runs[0]["record"]
    assert runs[0]["status"] == "ok" and rec["response_words"] == 400 and len(rec["paragraphs"]) == 8
    assert rec["response"] == runs[1]["record"]["response"]
    assert EngineConfig(backend="instant", model="r").label() == "instant:r"
    assert EngineConfig(model="m").label() == "m"


def test_training_refuses_instant_rows_unless_told(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
             "model": m} for m in ("instant:r", "real")]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    with pytest.raises(InstantDataError, match="1 of 2 rows .* allow_instant_data"):
        read_conversations(str(tmp_path / "d.parquet"))
    got, _ = read_conversations(str(tmp_path / "d.parquet"), allow_instant=True)
    assert len(got) == 2
