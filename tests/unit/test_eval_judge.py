"""The judge: parsing bad answers, bounded retries, recorded failures, cache, truncation, and
the coverage denominators of the results (fake judges; no Ray, no engine)."""
from __future__ import annotations

import asyncio
import json

import pytest

from dataset_builder.llm.base import EngineConfig, EngineError
from eval import judge as J
from eval.config import EvalConfig
from eval.evaluate import build_results, score_samples
from eval.longbench_data import parse_benchmark
from eval.scoring import DIMENSIONS
from tests.helpers import GOOD, GOOD_TEXT, FakeJudge

# ----------------------------------------------------------------------------- parsing

def test_parse_valid_and_wrapped_answers():
    assert J.parse_judgement(GOOD_TEXT) == (GOOD, None)
    fenced = f"Here is my rating:\n```json\n{json.dumps(GOOD, indent=2)}\n```\nThanks."
    assert J.parse_judgement(fenced) == (GOOD, None)
    prose_then_json = f"The response is decent. {GOOD_TEXT} That's all."
    assert J.parse_judgement(prose_then_json) == (GOOD, None)
    keys = {"relevance": 5, "ACCURACY": 4, "coherence": 3, "clarity": "2",
            "breadth_and_depth": 1, "reading-experience": 4.5}
    ratings, err = J.parse_judgement(json.dumps(keys))
    assert err is None
    assert ratings == {"Relevance": 5, "Accuracy": 4, "Coherence": 3, "Clarity": 2,
                       "Breadth and Depth": 1, "Reading Experience": 4.5}


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    (None, "empty"),
    ("   \n ", "empty"),
    ("The response is excellent, I would give it five stars.", "no_json"),
    ('{"Relevance": 4, "Accuracy": 5, "Coher', "malformed_json"),
    ('{"Relevance": 4, "Accuracy": 5}', "missing_dimensions"),
    (json.dumps({**GOOD, "Clarity": 6}), "out_of_range"),
    (json.dumps({**GOOD, "Clarity": 0}), "out_of_range"),
    (json.dumps({**GOOD, "Clarity": -3}), "out_of_range"),
    (json.dumps({**GOOD, "Clarity": "great"}), "not_a_number"),
    (json.dumps({**GOOD, "Clarity": True}), "not_a_number"),
    (json.dumps({**GOOD, "Clarity": None}), "not_a_number"),
    (('{"Relevance": NaN, "Accuracy": 4, "Coherence": 4, "Clarity": 4, '
     '"Breadth and Depth": 4, "Reading Experience": 4}'), "not_a_number"),
    ("[4, 4, 4, 4, 4, 4]", "not_an_object"),
    ("4", "not_an_object"),
])
def test_parse_bad_answers_give_a_reason(text, reason):
    ratings, err = J.parse_judgement(text)
    assert ratings is None
    assert err.startswith(reason), err


def test_prompt_substitution_is_single_pass():
    p = J.judge_prompt("Write about $RESPONSE$ tokens", "my answer")
    assert "Write about $RESPONSE$ tokens" in p
    assert "<response>\nmy answer\n</response>" in p
    assert J.TRUNCATION_NOTE not in p
    assert J.TRUNCATION_NOTE in J.judge_prompt("x", "y", truncated=True)
    for d in DIMENSIONS:
        assert d in p


# ----------------------------------------------------------------------------- retries

def judge(chat, **kw):
    args = {"instruction": "Write a poem.", "response": "Roses are red.", "judge_model": "fake",
                "replicate": 0, "seed": 42, "temperature": 0.5, "max_tokens": 64, "max_model_len": 100_000,
                "max_attempts": 3, "item_id": "item-1"}
    args.update(kw)
    return asyncio.run(J.judge_one(chat, **args))


def test_malformed_answers_are_retried_then_succeed():
    chat = FakeJudge(["I think it is good.", '{"Relevance": 9}', json.dumps({**GOOD, "Clarity": 7}),
                      GOOD_TEXT])
    rec = judge(chat, max_attempts=4)
    assert rec["status"] == "ok" and rec["attempts"] == 4
    assert rec["ratings"] == GOOD and rec["s_q"] == pytest.approx(75.0)
    assert [e.split(" ")[0].rstrip(":") for e in rec["errors"]] == [
        "no_json", "missing_dimensions", "out_of_range"]
    seeds = [s.seed for s in chat.calls]
    assert len(set(seeds)) == 4            # a retry is a fresh sample, not the same one again
    assert all(s.json_schema == J.JUDGE_SCHEMA for s in chat.calls)


def test_failure_after_bounded_attempts_is_recorded():
    chat = FakeJudge(["", "prose only", '{"Relevance": 3, "Acc', "never asked"])
    rec = judge(chat, max_attempts=3)
    assert len(chat.calls) == 3             # bounded
    assert rec["status"] == "failed" and rec["attempts"] == 3
    assert [e.split(" ")[0] for e in rec["errors"]] == ["empty", "no_json", "malformed_json"]
    assert rec["raw_outputs"] == ["", "prose only", '{"Relevance": 3, "Acc']
    assert "s_q" not in rec


def test_engine_errors_count_as_attempts_and_never_raise():
    chat = FakeJudge([EngineError("openai endpoint answered 500: boom"), GOOD_TEXT])
    rec = judge(chat)
    assert rec["status"] == "ok" and rec["attempts"] == 2
    assert rec["errors"][0].startswith("engine_error: EngineError")
    rec = judge(FakeJudge([RuntimeError("actor died")] * 3))
    assert rec["status"] == "failed" and len(rec["errors"]) == 3


def test_unconstrained_mode_sends_no_schema():
    chat = FakeJudge([GOOD_TEXT])
    judge(chat, schema=None)
    assert chat.calls[0].json_schema is None


def test_schema_puts_analysis_first_and_bounds_it_on_request():
    s = J.judge_schema()
    assert list(s["properties"]) == ["Analysis", *DIMENSIONS] == s["required"]
    assert "maxLength" not in s["properties"]["Analysis"]
    assert J.judge_schema(300)["properties"]["Analysis"]["maxLength"] == 300
    for d in DIMENSIONS:
        assert s["properties"][d]["enum"] == [1, 2, 3, 4, 5]


def test_analysis_is_recorded():
    answer = json.dumps({"Analysis": "Short and on topic.", **GOOD})
    rec = judge(FakeJudge([answer]))
    assert rec["analysis"] == "Short and on topic." and rec["ratings"] == GOOD


def test_cache_makes_a_rerun_free(tmp_path):
    cache = J.JudgeCache(str(tmp_path / "cache"))
    first = FakeJudge(["nope", GOOD_TEXT])
    rec = judge(first, cache=cache)
    assert rec["status"] == "ok" and not rec["cached"]
    again = FakeJudge([])
    rec2 = judge(again, cache=cache)
    assert again.calls == [] and rec2["cached"] and rec2["ratings"] == GOOD
    # A different replicate, judge model, response or answer schema is a different key.
    for kw in ({"replicate": 1}, {"judge_model": "other"}, {"response": "Violets are blue."},
               {"schema": J.judge_schema(100)}):
        chat = FakeJudge([GOOD_TEXT])
        judge(chat, cache=cache, **kw)
        assert len(chat.calls) == 1, kw


def test_failures_are_not_cached(tmp_path):
    cache = J.JudgeCache(str(tmp_path / "cache"))
    judge(FakeJudge(["bad"] * 3), cache=cache)
    chat = FakeJudge([GOOD_TEXT])
    assert judge(chat, cache=cache)["status"] == "ok" and len(chat.calls) == 1


def test_cache_on_s3(moto_s3):
    cache = J.JudgeCache("s3://test-bucket/judge-cache-test")
    judge(FakeJudge([GOOD_TEXT]), cache=cache)
    chat = FakeJudge([])
    assert judge(chat, cache=cache)["cached"] and chat.calls == []


# ----------------------------------------------------------------------------- truncation

def test_truncation_with_tokenizer_fits_the_context(tiny_model):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model)
    response = " ".join(f"word{i}" for i in range(5000))
    f = J.fit_response("Write a long essay.", response, max_model_len=1024, max_tokens=64,
                       tokenizer=tok)
    assert f.truncated and f.unit == "tokens" and f.kept < f.total
    assert response.startswith(f.text[:1000])
    msgs = J.judge_messages("Write a long essay.", f.text, truncated=True)
    ids = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
              add_special_tokens=False)["input_ids"]
    assert len(ids) + 64 <= 1024
    # Deterministic, and a short response is untouched.
    assert J.fit_response("Write a long essay.", response, 1024, 64, tok).text == f.text
    short = J.fit_response("Write.", "Short answer.", 1024, 64, tok)
    assert not short.truncated and short.text == "Short answer."


def test_truncation_without_tokenizer_uses_characters():
    f = J.fit_response("Q", "x" * 10_000, max_model_len=3000, max_tokens=100)
    assert f.truncated and f.unit == "chars" and len(f.text) == f.kept < 3000
    assert J.fit_response("Q" * 5000, "x", max_model_len=3000, max_tokens=100) is None


def test_truncated_judgement_is_recorded():
    chat = FakeJudge([GOOD_TEXT])
    rec = judge(chat, response="y" * 50_000, max_model_len=4000)
    assert rec["status"] == "ok" and rec["truncated"] and rec["judged_length"] < 50_000


def test_instruction_too_long_for_the_judge_is_a_recorded_failure():
    chat = FakeJudge([GOOD_TEXT])
    rec = judge(chat, instruction="Q" * 10_000, max_model_len=2000)
    assert rec["status"] == "failed" and chat.calls == []
    assert rec["errors"][0].startswith("prompt_too_long")


# ----------------------------------------------------------------------------- replicates

def test_combine_replicates_mean_and_std():
    ok = [{"status": "ok", "s_q": 50.0, "ratings": {d: 3 for d in DIMENSIONS}},
          {"status": "ok", "s_q": 100.0, "ratings": {d: 5 for d in DIMENSIONS}},
          {"status": "failed"}]
    c = J.combine_replicates(ok)
    assert c["s_q"] == 75.0 and c["s_q_std"] == pytest.approx(35.3553, abs=1e-3)
    assert (c["judge_ok"], c["judge_failed"]) == (2, 1)
    assert c["ratings"] == {d: 4.0 for d in DIMENSIONS}
    none = J.combine_replicates([{"status": "failed"}])
    assert none["s_q"] is None and none["judge_failed"] == 1


# ----------------------------------------------------------------------------- benchmark file

def test_malformed_benchmark_lines_become_rejects():
    lines = [
        json.dumps({"prompt": "Write 100 words about tea.", "type": "Popular Science",
                    "length": 100}),
        '{"prompt": "broken", "length": ',
        json.dumps(["not", "an", "object"]),
        json.dumps({"type": "x", "length": 100}),
        json.dumps({"prompt": "  ", "length": 100}),
        json.dumps({"prompt": "zero", "length": 0}),
        json.dumps({"prompt": "string length", "length": "100"}),
        json.dumps({"prompt": "bool length", "length": True}),
        "",
        json.dumps({"prompt": "写一篇200字的文章。", "type": "Community Forum", "length": 200}),
        json.dumps({"prompt": "Write 100 words about tea.", "type": "Popular Science",
                    "length": 100}),
    ]
    data = ("\n".join(lines) + "\n").encode() + b"\xff\xfe bad bytes\n"
    items, rejects = parse_benchmark(data)
    assert [i["line"] for i in items] == [1, 10]
    assert [i["lang"] for i in items] == ["en", "zh"]
    assert items[1]["bucket"] == "[0,500)"
    reasons = {r["line"]: r["reason"].split(":")[0] for r in rejects}
    assert reasons == {2: "malformed_json", 3: "not_an_object", 4: "missing_or_empty_prompt",
                       5: "missing_or_empty_prompt", 6: "bad_length", 7: "bad_length",
                       8: "bad_length", 11: "duplicate_item", 12: "invalid_utf8"}


# ----------------------------------------------------------------------------- denominators

def _sample(i, status="ok", response="word " * 100, required=100):
    return {"id": f"s{i}", "line": i, "prompt": f"p{i}", "type": "t", "lang": "en",
            "required_length": required, "bucket": "[0,500)", "status": status,
            "response": response if status == "ok" else None}


def test_coverage_denominators_never_hide_failures(tmp_path):
    samples = [_sample(0), _sample(1), _sample(2, status="error"), _sample(3, response=""),
               _sample(4)]
    ok = {"status": "ok", "ratings": GOOD, "s_q": 75.0, "errors": [], "replicate": 0}
    judgements = [
        {**ok, "id": "s0"},
        {"id": "s1", "replicate": 0, "status": "failed", "errors": ["no_json (finish_reason=stop)",
                                                                    "out_of_range: Clarity=9"]},
        {**ok, "id": "s3", "ratings": {d: 1 for d in DIMENSIONS}, "s_q": 0.0},
        {**ok, "id": "s4", "truncated": True},
    ]
    cfg = EvalConfig(output=str(tmp_path), bootstrap_resamples=100, limit=5)
    rows = score_samples(samples, judgements, cfg)
    assert [r["s_l"] for r in rows] == [100.0, 100.0, None, 0.0, 100.0]
    assert [r["s_q"] for r in rows] == [75.0, None, None, 0.0, 75.0]
    assert rows[3]["empty_response"] and rows[3]["output_length"] == 0
    res = build_results(cfg, rows, judgements, [{"line": 9, "reason": "malformed_json"}],
                        {"lines": 6, "data_file": "x", "data_sha256": "0" * 64,
                         "lang_source": "test"}, [], {})
    c = res["coverage"]
    assert (c["benchmark_lines"], c["rejected_lines"], c["items"]) == (6, 1, 5)
    assert (c["generated"], c["generation_failed"], c["judged"]) == (4, 1, 3)
    assert c["judge_coverage"] == pytest.approx(3 / 4)
    assert (c["judge_replicates_expected"], c["judge_replicates_ok"],
            c["judge_replicates_failed"]) == (4, 3, 1)
    assert c["judge_failure_reasons"] == {"out_of_range": 1}
    assert c["empty_responses"] == 1 and c["judge_truncated"] == 1
    assert c["complete"] is False
    o = res["overall"]
    assert (o["n"], o["n_generated"], o["n_judged"]) == (5, 4, 3)
    assert o["S_l"] == pytest.approx(75.0) and o["S_q"] == pytest.approx(50.0)
    assert o["S"] == pytest.approx(62.5)
    assert res["published_comparable"] is False
    assert any("limit" in w for w in res["not_comparable_because"])
    assert any("rejected" in w for w in res["not_comparable_because"])


# ----------------------------------------------------------------------------- generation

def test_generation_failure_is_a_record_and_success_counts_words(tmp_path):
    from eval.stages import GenerationStore, generate_one, generation_hash
    cfg = EvalConfig(output=str(tmp_path), max_new_tokens=64)
    item = {"id": "x1", "line": 1, "prompt": "Write 100 words.", "type": "t", "lang": "en",
            "required_length": 100, "bucket": "[0,500)"}
    bad = asyncio.run(generate_one(FakeJudge([EngineError("prompt_too_long: 9000 tokens")]),
                                   item, cfg, "h"))
    assert bad["status"] == "error" and "prompt_too_long" in bad["error"]
    assert bad["response"] is None and bad["seed"] == J.derive_seed(42, "gen", "x1")
    good = asyncio.run(generate_one(FakeJudge(["Don't stop: 中文 words here."]), item, cfg, "h"))
    assert good["status"] == "ok" and good["finish_reason"] == "stop"
    assert (good["output_words_legacy"], good["output_words_unicode"]) == (7, 6)
    assert good["output_tokens"] == 5 and good["max_new_tokens"] == 64
    # The store reuses a response only under the same generation hash.
    store = GenerationStore(str(tmp_path / "gens"))
    store.save({**good, "generation_hash": generation_hash(cfg)})
    assert list(store.load(generation_hash(cfg))[0]) == ["x1"]
    other = EvalConfig(output=str(tmp_path), max_new_tokens=64, temperature=0.0)
    assert store.load(generation_hash(other)) == ({}, 1)


def test_unrunnable_config_fails_before_any_engine_starts(tmp_path):
    from dataset_builder.core.config import ConfigError
    from dataset_builder.core.storage import StorageError
    from eval.evaluate import run_eval
    with pytest.raises(ConfigError, match="engine.model is required"):
        run_eval(EvalConfig(output=str(tmp_path)))
    with pytest.raises(ConfigError, match="judge_samples must be >= 1"):
        run_eval(EvalConfig(output=str(tmp_path), judge_samples=0, engine=EngineConfig(
            model="m")))
    with pytest.raises(ConfigError, match="judge: need 1 <= min_replicas <= max_replicas"):
        run_eval(EvalConfig(output=str(tmp_path), engine=EngineConfig(model="m"),
                            judge=EngineConfig(model="j", min_replicas=2, max_replicas=1)))
    with pytest.raises(StorageError, match="input not found"):
        run_eval(EvalConfig(output=str(tmp_path), data_dir=str(tmp_path / "missing"),
                            generate=False, judge_enabled=False))
