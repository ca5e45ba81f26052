"""The generation job's per-row logic without Ray: the driver's decisions (earlier results,
duplicates, length rules, limit) and the engine-stage task (LLM estimate, attempts bounded by
the journal, one failing row = one reject), driven by a scripted engine; and EngineStage's
row handling with the engine swapped for a fake."""
import asyncio
import json

from dataset_builder.core.config import load_config
from dataset_builder.core.records import todo
from dataset_builder.generation import AgentWriteTask, GenerateConfig, _apply, _plan
from dataset_builder.llm import Completion, EngineConfig
from dataset_builder.llm.stage import task_rows
from dataset_builder.selection import decide, send_order
from tests.helpers import PLAN, engine_stage_without_ray


def _decide(rows, done, recorded, cfg):
    return decide(rows, done, recorded, cfg.selection, cfg.limit)


def _cfg(tmp_path, *extra):
    return load_config(GenerateConfig, None, [
        "input=x", f"output={tmp_path}", "engine.backend=openai", "engine.model=m",
        "selection.min_required_words=500", "agentwrite.min_paragraph_words=100",
        "agentwrite.max_paragraph_words=1000", *extra])


def _row(line, rid, words=None, lang="en", status="todo"):
    return {"file": "f.jsonl", "line": line, "id": rid, "lang": lang, "status": status,
            "required_words": words, "required_words_source": "rule" if words else None}


def test_decide_skips_earlier_results_dedups_applies_rules_then_limit(tmp_path):
    rows = [_row(1, "a", 3000), _row(2, "b", 3000), _row(3, "a", 3000), _row(4, "c", 100),
            _row(5, "d"), _row(6, "e", 3000, lang="zh"), _row(7, "f", 900),
            _row(8, None, status="reject"), _row(9, None, status="reject")]
    d = _decide(rows, done={"b"}, recorded={("input", None, 9, "f.jsonl")},
                cfg=_cfg(tmp_path, "limit=3", "selection.languages=[en]"))
    at = {line: d[("f.jsonl", line)] for line in range(1, 10)}
    assert at[1] == "todo" and at[2] == "skip" and at[3] == ("dedup", "duplicate_prompt")
    assert at[4][0] == "selection" and at[4][1].startswith("below_min_required_words")
    assert at[5] == "todo"  # no stated length: estimated in the engine stage
    assert at[6][1].startswith("language_not_generated")
    assert at[7] == "todo" and at[8] == "keep" and at[9] == "skip"  # 9: recorded before
    d = _decide(rows, set(), set(), _cfg(tmp_path, "limit=1"))
    assert d[("f.jsonl", 1)] == "todo" and d[("f.jsonl", 5)] == "later"


class NoEngine:
    batch = None


class Scripted:
    batch = None

    def __init__(self, answers):
        self.answers = list(answers)

    async def chat(self, messages, sampling):
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return Completion(a, "stop", 10, 5, 0)


def _inst(words=None):
    return {"id": "i1", "prompt": "Write an essay on rivers.", "lang": "en", "source": "t",
            "required_words": words, "line": 3, "file": "f.jsonl"}


def test_send_order_is_longest_first_with_unknown_lengths_before_all(tmp_path):
    rows = [_row(1, "a", 3000), _row(2, "b"), _row(3, "c", 9000), _row(4, "d", 3000),
            _row(5, "e", 100), _row(6, "f", 5000)]
    d = _decide(rows, {"f"}, set(), _cfg(tmp_path))  # e: too short, f: done earlier
    assert d[("f.jsonl", 5)] != "todo" and d[("f.jsonl", 6)] == "skip"
    order = send_order(rows, d, longest_first=True)
    assert sorted(order, key=order.get) == [("f.jsonl", n) for n in (2, 3, 1, 4)]  # ties: input
    order = send_order(rows, d, longest_first=False)
    assert sorted(order, key=order.get) == [("f.jsonl", n) for n in (1, 2, 3, 4)]


def test_plan_is_one_dict_of_ranks_and_decisions_and_apply_follows_it(tmp_path):
    """What the driver keeps while the job runs: a rank for each row sent to the engines, the
    decision for the others; _apply drops skipped and later rows and turns rejects into rows."""
    import pyarrow as pa
    rows = [_row(1, "a", 3000), _row(2, "b", 9000), _row(3, "c", 100), _row(4, "a", 4000),
            _row(5, "d", 6000), _row(6, "e", 7000)]
    plan, n = _plan(rows, {"d"}, set(), _cfg(tmp_path, "limit=2"))
    key = lambda i: ("f.jsonl", i)  # noqa: E731
    assert plan[key(2)] == 0 and plan[key(1)] == 1           # longest first, ranks from 0
    assert plan[key(3)][0] == "selection" and plan[key(4)] == ("dedup", "duplicate_prompt")
    assert plan[key(5)] == "skip" and plan[key(6)] == "later"  # done earlier; over the limit
    assert n == {"in": 6, "todo": 2, "later": 1, "rejects": 2,
                 "expected_words": 6000.0}
    batch = pa.Table.from_pylist([
        {"id": r["id"], "status": "todo",
         "payload": json.dumps({**r, "prompt": f"p{r['line']}", "source": "t"})}
        for r in rows])
    out = _apply(batch, plan).to_pylist()
    assert [(json.loads(r["payload"])["line"], r["status"], r["rank"]) for r in out] == [
        (1, "todo", 1), (2, "todo", 0), (3, "reject", 0), (4, "reject", 0)]


def test_task_estimates_then_writes_and_rejects_a_low_estimate(tmp_path):
    task = AgentWriteTask(_cfg(tmp_path), str(tmp_path / "j"), "run1")
    res = asyncio.run(task.run(Scripted(["600", PLAN, "one.", "two."]), _inst()))
    assert res["status"] == "ok" and res["record"]["required_words_source"] == "llm"
    assert res["record"]["required_words"] == 600 and res["attempt"] == 1
    low = asyncio.run(task.run(Scripted(["120"]), {**_inst(), "id": "i2"}))
    assert low["stage"] == "selection" and low["reason"].startswith("below_min_required_words")


def test_a_row_whose_replica_keeps_dying_ends_as_a_reject(tmp_path):
    task = AgentWriteTask(_cfg(tmp_path, "max_attempts=2"), str(tmp_path / "j"), "run1")

    class Dies:
        async def chat(self, messages, sampling):
            raise SystemExit  # the process is gone mid-row: no reject, Ray reruns the row
    for _ in range(2):
        try:
            asyncio.run(task.run(Dies(), _inst(600)))
        except SystemExit:
            pass
    res = asyncio.run(task.run(Scripted([]), _inst(600)))
    assert res == {"status": "reject", "stage": "engine", "reason": "engine_lost_2_times"}
    # A new run starts counting again.
    again = AgentWriteTask(_cfg(tmp_path, "max_attempts=2"), str(tmp_path / "j"), "run2")
    assert asyncio.run(again.run(Scripted([PLAN, "a", "b"]), _inst(600)))["status"] == "ok"


def test_engine_stage_turns_an_exception_into_that_rows_reject(tmp_path):
    import pyarrow as pa

    class Boom:
        stage, accepts, engine_key = "agentwrite", ("todo",), "engine"

        async def run(self, engine, item):
            if item["id"] == "bad":
                raise ValueError("unexpected input")
            return {"status": "ok", "record": {"id": item["id"]}}
    stage = engine_stage_without_ray(NoEngine(), Boom())
    rows = [todo({"id": "good"}), todo({"id": "bad"}),
            {"id": None, "status": "reject", "payload": json.dumps({"stage": "input"})}]
    out = asyncio.run(stage(pa.Table.from_pylist(rows))).to_pylist()
    assert [r["status"] for r in out] == ["ok", "reject", "reject"]
    bad = json.loads(out[1]["payload"])
    assert bad["stage"] == "agentwrite" and bad["reason"].startswith("internal_error: ValueError")
    assert out[2] == rows[2]  # an earlier reject passes untouched


def test_task_rows_grow_so_that_a_large_input_makes_at_most_max_queued_tasks_tasks():
    """Ray Data queues every task's block at once (DESIGN §13): the count is what is capped."""
    cfg = EngineConfig(rows_per_task=8, max_queued_tasks=20_000)
    assert task_rows(cfg, None) == 8                 # count unknown: rows_per_task
    assert task_rows(cfg, 100_000) == 8              # 12,500 tasks: under the cap
    assert task_rows(cfg, 1_000_000) == 50           # 20,000 tasks of 50
    assert task_rows(cfg, 1_000_001) == 51           # never one task over the cap
    assert -(-1_000_001 // 51) <= 20_000
    assert task_rows(EngineConfig(rows_per_task=8, max_queued_tasks=0), 10**9) == 8  # no cap
