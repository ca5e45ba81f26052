"""Evaluation's engine-stage tasks without Ray: EngineStage's row handling with a scripted
engine (generation stores what it writes; the judge runs on generated rows only, every
replicate, through the cache; ruler rows and failed generations pass), and the per-key store."""
import asyncio
import json

import pyarrow as pa

from dataset_builder.core import storage
from dataset_builder.core.records import todo
from dataset_builder.llm.base import EngineConfig
from eval.config import EvalConfig
from eval.stages import GenerateTask, GenerationStore, JudgeTask, generation_hash
from tests.helpers import GOOD_TEXT, FakeJudge, engine_stage_without_ray


class Engine:
    batch = None

    def __init__(self, answers):
        self.chat = FakeJudge(answers)


def _stage(task, answers):
    return engine_stage_without_ray(Engine(answers), task, '{"pid": 1}')


def _run(stage, rows):
    out = asyncio.run(stage(pa.Table.from_pylist(rows))).to_pylist()
    return [(r["status"], json.loads(r["payload"])) for r in out]


def _cfg(tmp_path, **kw):
    return EvalConfig(output=str(tmp_path), engine=EngineConfig(model="m"),
                      judge=EngineConfig(backend="openai", model="j"), max_new_tokens=64, **kw)


def test_generation_rows_are_written_and_stored_at_once(tmp_path):
    cfg = _cfg(tmp_path)
    h = generation_hash(cfg)
    item = {"id": "a", "kind": "lbw", "prompt": "Write.", "required_length": 10}
    ruler = {"id": "r", "kind": "ruler", "prompt": "Write.", "required_length": 10}
    stored = {**item, "id": "old", "status": "ok", "response": "kept"}
    rows = [todo(item), todo(ruler), {**todo(stored), "status": "ok"}]
    out = _run(_stage(GenerateTask(cfg, h), ["one two three", "four"]), rows)
    assert [s for s, _ in out] == ["ok", "ok", "ok"]
    assert out[0][1]["response"] == "one two three" and out[0][1]["generated"]
    assert out[0][1]["engine"] == '{"pid": 1}'
    assert out[2][1] == {**stored, "status": "ok"}       # a stored answer is not written again
    assert list(GenerationStore(str(tmp_path / "generations")).load(h)[0]) == ["a"]
    assert list(GenerationStore(str(tmp_path / "ruler_generations")).load(h)[0]) == ["r"]


def test_judge_rows_every_replicate_once_then_from_the_cache(tmp_path):
    cfg = _cfg(tmp_path, judge_samples=2, judge_max_attempts=2, judge_constraint="none")
    task = JudgeTask(cfg, str(tmp_path / "cache"), 0.0)
    ok = {"id": "a", "kind": "lbw", "prompt": "Write a poem.", "response": "Roses.",
          "engine": "gen"}
    failed = {"id": "b", "kind": "lbw", "status": "error", "response": None}
    ruler = {"id": "r", "kind": "ruler", "response": "x"}
    rows = [{**todo(ok), "status": "ok"}, {**todo(failed), "status": "error"},
            {**todo(ruler), "status": "ok"}]
    stage = _stage(task, [GOOD_TEXT, "prose, not JSON", GOOD_TEXT])
    out = _run(stage, rows)
    a = out[0][1]
    assert out[0][0] == "ok" and a["judge_calls"] == 3 and len(a["judgements"]) == 2
    assert [j["status"] for j in a["judgements"]] == ["ok", "ok"]
    assert a["engine"] == "gen" and a["judge_engine"] == '{"pid": 1}'
    assert out[1] == ("error", {**failed, "status": "error"}) and rows[1]["status"] == "error"
    assert out[2][0] == "ok" and "judgements" not in out[2][1]
    again = _run(_stage(task, []), rows[:1])[0][1]
    assert again["judge_calls"] == 0 and all(j["cached"] for j in again["judgements"])


def test_json_store_reads_damaged_documents_as_missing(tmp_path):
    s = storage.JsonStore(str(tmp_path / "s"), fanout=True)
    s.put("abcd", {"x": 1})
    assert s.get("abcd") == {"x": 1} and (tmp_path / "s" / "ab" / "abcd.json").exists()
    (tmp_path / "s" / "ab" / "abef.json").write_text("{half")
    assert s.get("abef") is None and s.get("zz") is None
    assert s.items() == ({"abcd": {"x": 1}}, 1)
    assert storage.JsonStore(str(tmp_path / "none")).items() == ({}, 0)


def test_collect_keeps_a_response_whose_judging_raised(tmp_path):
    """A task exception is that row's reject: in generation the item failed; in judging the
    response stands and every replicate is a failed judgement with the reason (counted)."""
    from eval.evaluate import _collect
    cfg = _cfg(tmp_path, judge_samples=2)
    work = [("lbw", {"id": "a"}), ("lbw", {"id": "b"}), ("ruler", {"id": "a"})]
    done = [
        {"id": "a", "kind": "lbw", "status": "reject", "stage": "judge", "response": "text",
         "output_tokens": 7, "generated": True, "reason": "internal_error: KeyError: x"},
        {"id": "b", "kind": "lbw", "status": "reject", "stage": "generate",
         "reason": "internal_error: ValueError: y"},
        {"id": "a", "kind": "ruler", "status": "ok", "response": "r", "output_tokens": 3,
         "generated": True},
    ]
    out = _collect(cfg, work, done, {"skipped": 0, "stale_generations": 0}, 1.0)
    a, b = out["samples"]
    assert (a["status"], a["response"]) == ("ok", "text")
    assert (b["status"], b["response"], b["error"]) == ("error", None,
                                                        "internal_error: ValueError: y")
    assert [(j["id"], j["replicate"], j["status"]) for j in out["judgements"]] == [
        ("a", 0, "failed"), ("a", 1, "failed")]
    assert out["ruler"] == [{"id": "a", "status": "ok", "response": "r", "output_tokens": 3}]
    assert out["stats"]["generated"] == 2 and out["stats"]["output_tokens_generated"] == 10
