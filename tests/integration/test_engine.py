"""The vLLM CPU engine inside a Ray actor, on the tiny random model."""
import json
import re

import pytest
import ray

from dataset_builder.llm import EngineConfig, EngineError, Sampling
from dataset_builder.llm.actor import start_engines

pytestmark = pytest.mark.integration
MSG = [{"role": "user", "content": "Write about rivers."}]


def test_regex_constraint_and_forced_length(tiny_engine):
    c = ray.get(tiny_engine.chat.remote(MSG, Sampling(max_tokens=40, regex=r"(yes|no) [0-9]{3}")))
    assert re.fullmatch(r"(yes|no) [0-9]{3}", c.text), c.text
    c = ray.get(tiny_engine.chat.remote(MSG, Sampling(max_tokens=17, min_tokens=17,
                                                      ignore_eos=True)))
    assert c.output_tokens == 17 and c.finish_reason == "length"


def test_json_schema_constraint(tiny_engine):
    schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1,
                                                         "maximum": 5}},
              "required": ["score"], "additionalProperties": False}
    c = ray.get(tiny_engine.chat.remote(MSG, Sampling(max_tokens=30, json_schema=schema,
                                                      temperature=0.0)))
    assert 1 <= json.loads(c.text)["score"] <= 5


def test_prefix_cache_hits_on_shared_prefix(tiny_engine):
    long = [{"role": "user", "content": "Background. " * 300 + "Question one?"}]
    ray.get(tiny_engine.chat.remote(long, Sampling(max_tokens=2)))
    c = ray.get(tiny_engine.chat.remote(long, Sampling(max_tokens=2)))
    assert c.cached_tokens >= 0.8 * c.prompt_tokens
    m = ray.get(tiny_engine.metrics.remote())
    assert m["requests"] >= 2 and m["cached_tokens"] > 0 and 0 < m["prefix_hit_rate"] <= 1


def test_batch_stats_tell_a_full_batch_from_one_request_at_a_time(tiny_engine):
    """The engine's batch fill (llm/batch_stats.py) follows the requests it had at once:
    8 together fill 8 of the 64 slots, one after another 1 of 64."""
    from dataset_builder.llm.batch_stats import fill
    forced = Sampling(max_tokens=48, min_tokens=48, ignore_eos=True)

    def run(concurrent: bool) -> dict:
        before = ray.get(tiny_engine.metrics.remote())["batch"]
        if concurrent:
            ray.get([tiny_engine.chat.remote(MSG, forced) for _ in range(8)])
        else:
            for _ in range(8):
                ray.get(tiny_engine.chat.remote(MSG, forced))
        return fill(before, ray.get(tiny_engine.metrics.remote())["batch"])
    one, eight = run(False), run(True)
    assert one["steps"] >= 8 * 40 and eight["steps"] >= 40
    assert one["batch_fill"] == pytest.approx(1 / 64, rel=0.15)
    assert 4 / 64 < eight["batch_fill"] <= 8 / 64 * 1.05
    assert one["preemptions"] == eight["preemptions"] == 0 and 0 < eight["kv_usage_mean"] < 1


def test_prompt_over_context_is_a_clear_error(tiny_engine):
    huge = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(EngineError, match="prompt_too_long"):
        ray.get(tiny_engine.chat.remote(huge, Sampling(max_tokens=2)))


def test_missing_model_path_fails_fast(ray_local, tmp_path):
    cfg = EngineConfig(model=str(tmp_path / "no-such-model"), num_cpus=0)
    with pytest.raises(EngineError, match=r"engine\.model not found: .*no-such-model"):
        try:
            start_engines(cfg, 1, max_restarts=0)
        except ray.exceptions.ActorDiedError as e:
            raise e.__cause__ or EngineError(str(e)) from None
