"""The signals' pure parts: the measures from log-probabilities, the thresholds with their
reasons (unscored rows pass), the task's scoring requests on a scripted engine, and config
errors in one line."""
import asyncio
import json
import math

import pyarrow as pa
import pytest

from dataset_builder.core.config import ConfigError, load_config
from dataset_builder.curate import signals as S
from dataset_builder.curate.config import CurateConfig
from dataset_builder.curate.stages import WORK
from dataset_builder.llm.base import Completion, EngineError


def test_measures_from_mean_log_probabilities():
    assert S.mean_logprob([None, -1.0, -3.0]) == -2.0 and S.mean_logprob([None]) is None
    s = S.signals(cond=-2.0, uncond=-2.5)
    assert s["perplexity"] == pytest.approx(math.exp(2.0)) and s["relevance"] == 0.5


def test_thresholds_are_off_until_set_and_unscored_rows_pass():
    off = S.SignalsConfig()
    assert S.keep(5000.0, -3.0, off) == (True, None)
    on = S.SignalsConfig(min_relevance=0.0, max_perplexity=100.0)
    assert S.keep(50.0, 0.1, on) == (True, None)
    assert S.keep(50.0, -0.2, on)[1] == "low_relevance: -0.2000 < 0.0"
    assert S.keep(150.0, 0.1, on)[1] == "high_perplexity: 150.0 > 100.0"
    assert S.keep(None, None, on) == (True, None)


def test_mark_sets_columns_and_rejects_with_signals_stage():
    rows = [{n: None for n in WORK.names} | {"row_key": k, "id": k} for k in ("a", "b", "c")]
    rows[2]["stage"], rows[2]["reason"] = "filter", "too_short: 3"
    batch = pa.Table.from_pylist(rows, schema=WORK)
    assert S.to_rows(batch).column("id").to_pylist() == ["a", "b"]   # dropped rows not sent
    scores = {"a": {"perplexity": 20.0, "relevance": 0.2, "signal_tokens": 9,
                    "signal_error": None},
              "b": {"perplexity": 25.0, "relevance": -0.1, "signal_tokens": 9,
                    "signal_error": None}}
    out = {r["row_key"]: r for r in S.mark(batch, scores, S.SignalsConfig(min_relevance=0.0))
           .to_pylist()}
    assert out["a"]["stage"] is None and out["a"]["relevance"] == 0.2
    assert out["b"]["stage"] == "signals" and out["b"]["reason"].startswith("low_relevance")
    assert json.loads(out["b"]["detail"]) == {"perplexity": 25.0, "relevance": -0.1}
    assert out["c"]["reason"] == "too_short: 3" and out["c"]["relevance"] is None


class ScriptedEngine:
    """Prompt log-probabilities: -1 per token after the instruction, -2 after an empty one."""

    def __init__(self, fail: bool = False):
        self.fail, self.calls = fail, []

    async def chat(self, messages, sampling):
        self.calls.append((messages, sampling))
        if self.fail:
            raise EngineError("prompt_too_long: 9000 tokens")
        ids = [7] * 5 + messages[1]["token_ids"]
        lp = -1.0 if messages[0]["content"] else -2.0
        return Completion("x", "length", len(ids), 1, prompt_ids=ids,
                          prompt_logprobs=[None] + [-9.0] * 4 + [lp] * (len(ids) - 5))


def _task(tiny_model, **kw):
    return S.SignalTask(S.SignalsConfig(engine=load_config(
        CurateConfig, None, ["input=a", "output=b", f"signals.engine.model={tiny_model}"]
    ).signals.engine, **kw))


def test_task_scores_the_response_tokens_only(tiny_model):
    task, eng = _task(tiny_model, max_response_tokens=4), ScriptedEngine()
    out = asyncio.run(task.run(eng, {"prompt": "Write.", "response": "one two three four five six"}))
    assert out["signal_tokens"] == 4
    assert out["relevance"] == pytest.approx(1.0) and out["perplexity"] == pytest.approx(math.e)
    (m1, s1), (m2, _) = eng.calls
    assert s1.prompt_logprobs and s1.max_tokens == 1 and s1.temperature == 0.0
    assert m1[1]["token_ids"] == m2[1]["token_ids"] and len(m1[1]["token_ids"]) == 4
    assert {m1[0]["content"], m2[0]["content"]} == {"Write.", ""}


def test_task_records_why_a_row_has_no_signals(tiny_model):
    task = _task(tiny_model)
    assert asyncio.run(task.run(ScriptedEngine(), {"prompt": "W", "response": ""})) == {
        "status": "ok", "signal_error": "empty_response"}
    out = asyncio.run(task.run(ScriptedEngine(fail=True), {"prompt": "W", "response": "text"}))
    assert out["signal_error"].startswith("engine_error: prompt_too_long")


def test_signals_with_another_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="signals.engine.backend must be vllm"):
        load_config(CurateConfig, None, ["input=a", "output=b", "signals.enabled=true",
                                         "signals.engine.backend=openai"])
