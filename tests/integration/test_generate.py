"""The generation job on a real local Ray + CPU vLLM (tiny model): bad input, S3, resume.

The Ray Data engine stage here sends its requests to the session's one tiny engine
(`engine.attach`), so the tests do not start an engine per job; the stage with its own engines,
autoscaling and node loss run in test_multinode.py."""
import asyncio
import json

import pytest
import ray

from dataset_builder.core import storage
from dataset_builder.core.config import load_config
from dataset_builder.generation import GenerateConfig, run

pytestmark = pytest.mark.integration

GOOD = [
    "Write a 3000-word essay on the history of canals.",
    "Write a 2,500 words guide to home composting.",
    "请写一篇3000字的文章，介绍春节。",
    "写一篇两千字的科普文章，解释光合作用。",
]


def _input(path, extra: list[bytes] = ()):
    lines = [json.dumps({"prompt": p}, ensure_ascii=False).encode() for p in GOOD]
    lines += [b"{broken json", json.dumps({"prompt": ""}).encode(),
              json.dumps({"prompt": "Write a 500-word poem about tea."}).encode(),  # < 2000 words
              json.dumps({"prompt": "Write a 3000-word essay. " + "filler " * 6000}).encode(),
              *extra]
    data = b"\n".join(lines)
    if str(path).startswith("s3://"):
        storage.write_bytes_atomic(str(path), data)
    else:
        path.write_bytes(data)
    return str(path)


def _cfg(tiny_model, inp, out, *extra):
    return load_config(GenerateConfig, "ray_jobs/configs/generate_tiny.yaml",
                       [f"engine.model={tiny_model}", f"input={inp}", f"output={out}",
                        "progress=false", "engine.attach=tiny-engine", *extra])


def _requests(actor):
    return ray.get(actor.metrics.remote())["requests"]


def test_bad_input_rerun_and_resume_local(tiny_engine, tiny_model, tmp_path, monkeypatch):
    cfg = _cfg(tiny_model, _input(tmp_path / "in.jsonl", [b"\xff\xfe not utf8"]), tmp_path / "o")
    stats = run(cfg)
    out = str(tmp_path / "o")
    gens = storage.read_dataset(f"{out}/generations").to_pylist()
    assert stats["instructions_in"] == 9 and stats["rows_in_output"] == len(gens) >= 3
    assert len({g["id"] for g in gens}) == len(gens)
    g = gens[0]
    assert g["response"] == "\n\n".join(g["paragraphs"]) and len(g["paragraphs"]) == len(g["plan"])
    assert len(g["step_prompt_tokens"]) == len(g["plan"]) + 1 and g["model"] == tiny_model
    rejects = storage.read_dataset(f"{out}/_rejects").to_pylist()
    reasons = {(r["stage"], r["line"]): r["reason"].split(":")[0] for r in rejects}
    assert reasons[("input", 5)] == "malformed_json" and reasons[("input", 6)] == "empty_prompt"
    assert reasons[("input", 9)] == "invalid_utf8"
    assert reasons[("selection", 7)] == "below_min_required_words"
    # Over-long prompts are counted with the tokenizer and rejected before any engine call.
    too_long = [r for r in rejects if "prompt_too_long" in r["reason"]]
    assert too_long and all(r["stage"] == "selection" and r["line"] is not None and r["raw"]
                            for r in too_long)
    assert all(r["file"] == cfg.input for r in rejects)
    assert len(gens) + len([r for r in rejects if r["stage"] != "input"]) + 3 == 9
    assert storage.read_json(f"{out}/_stats.json")["rejects_by_reason"]
    assert "engine:" in (tmp_path / "o" / "_config.yaml").read_text()

    # Rerun: everything is committed or rejected, so no engine request and no new rows.
    before = _requests(tiny_engine)
    again = run(cfg)
    assert again["written_this_run"] == 0 and _requests(tiny_engine) == before
    assert len(storage.read_dataset(f"{out}/_rejects")) == len(rejects)
    # ... and with nothing left to do, no engine stage (no engine start) at all.
    import dataset_builder.generation as G
    monkeypatch.setattr(G, "engine_stage", lambda *a, **k: pytest.fail("engine stage built"))
    assert run(cfg)["written_this_run"] == 0
    monkeypatch.undo()

    # Lose the output but keep the journal: every step is resumed, none regenerated.
    fs, path = storage.get_fs(f"{out}/generations")
    fs.rm(path, recursive=True)
    resumed = run(cfg)
    assert _requests(tiny_engine) == before
    assert resumed["written_this_run"] == len(gens) and resumed["generated_steps"] == 0
    assert resumed["resumed_steps"] == sum(len(x["paragraphs"]) + 1 for x in gens)


def test_longest_instructions_go_to_the_engines_first(tiny_engine, tiny_model, tmp_path):
    """One row in flight: the order in which the stage runs rows is longest stated length
    first, input order with longest_first=false."""
    words = [2000, 6000, 3000, 4500]
    lines = [json.dumps({"prompt": f"Write a {w}-word essay on canal number {i}."})
             for i, w in enumerate(words)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines))

    def started(*extra):
        out = tmp_path / f"o{len(extra)}"
        run(_cfg(tiny_model, tmp_path / "in.jsonl", out, "engine.in_flight=1", *extra))
        gens = {g["id"]: g["required_words"]
                for g in storage.read_dataset(f"{out}/generations").to_pylist()}
        assert len(gens) == len(words)
        # one row at a time: the order of the journals' last writes is the order of starts
        last = {i: (out / "_journal" / i[:2] / f"{i}.json").stat().st_mtime_ns for i in gens}
        return [gens[i] for i in sorted(gens, key=last.get)]
    assert started() == [6000, 4500, 3000, 2000]
    assert started("longest_first=false") == words


def test_append_layout_extends_the_plan_conversation(tiny_engine, tiny_model, tmp_path):
    """layout=append on the real engine: step 1 is a short turn after the plan the model just
    wrote, and each later step a short turn after the previous paragraph. The earlier turns go
    back as the ids the engine generated, so every step gets from the prefix cache the whole KV
    blocks of the previous request's prompt and output (all but its last id, never computed)."""
    block = 128  # vLLM's CPU default; the shared tiny engine sets no block_size
    cfg = _cfg(tiny_model, "unused", tmp_path / "o", "agentwrite.layout=append")
    inst = {"id": "append-layout", "prompt": GOOD[0], "required_words": 3000, "lang": "en"}
    from dataset_builder.agentwrite import run_instruction
    from dataset_builder.llm import RemoteEngine
    res = asyncio.run(run_instruction(RemoteEngine("tiny-engine"), inst, cfg.agentwrite,
                                      str(tmp_path / "journal")))
    assert res["status"] == "ok", res
    r = res["record"]
    prompts_, outs, cached = (r["step_prompt_tokens"], r["step_output_tokens"],
                              r["step_cached_tokens"])
    assert r["layout"] == "append" and len(prompts_) == len(r["plan"]) + 1 >= 2
    for k in range(1, len(prompts_)):  # step k reuses request k-1 (k=1: the plan request)
        computed = prompts_[k - 1] + outs[k - 1] - 1
        assert prompts_[k] > computed
        assert cached[k] >= computed // block * block > 0, (k, prompts_, outs, cached)


def test_s3_input_and_output(tiny_engine, tiny_model, moto_s3, tmp_path):
    inp = _input(f"s3://test-bucket/{tmp_path.name}/in.jsonl")
    out = f"s3://test-bucket/{tmp_path.name}/run"
    stats = run(_cfg(tiny_model, inp, out))
    gens = storage.read_dataset(f"{out}/generations")
    assert gens.num_rows == stats["rows_in_output"] >= 3
    assert storage.exists(f"{out}/_stats.json") and storage.exists(f"{out}/_config.yaml")


def test_unreachable_store_and_missing_input_fail_fast(tiny_model, tmp_path):
    cfg = _cfg(tiny_model, tmp_path / "missing.jsonl", tmp_path / "o")
    with pytest.raises(storage.StorageError, match="input not found"):
        run(cfg)
    cfg = _cfg(tiny_model, "s3://b/in.jsonl", "s3://b/out", "storage.endpoint_url=http://127.0.0.1:9")
    with pytest.raises(storage.StorageError, match="cannot reach storage"):
        run(cfg)


def test_no_room_for_an_engine_or_a_broken_model_fails_in_one_line(ray_local, tiny_model,
                                                                    tmp_path, caplog):
    from dataset_builder.llm import EngineError
    inp = _input(tmp_path / "in.jsonl")
    cfg = _cfg(tiny_model, inp, tmp_path / "o", "engine.attach=", "engine.num_gpus=1",
               "engine.start_timeout_s=10")  # the session's Ray has no GPU
    with pytest.raises(EngineError, match=r"no engine replica was up after 10s: each needs "
                                          r"\{'CPU': 1.0, 'GPU': 1.0\}") as err:
        run(cfg)
    assert "\n" not in str(err.value)
    # while it waited, a line said what for (every minute; here, half the timeout)
    assert any("waiting for an engine replica" in r.getMessage() and "'GPU': 1.0" in
               r.getMessage() for r in caplog.records), caplog.text
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no_such_architecture"}')
    cfg = _cfg(str(broken), inp, tmp_path / "o2", "engine.attach=", "engine.start_timeout_s=300")
    with pytest.raises(EngineError, match="an engine replica could not start") as err:
        run(cfg)
    assert "\n" not in str(err.value)
    # an engine argument the installed vLLM does not know: named by the replica, before any row
    cfg = _cfg(tiny_model, inp, tmp_path / "o3", "engine.attach=", "engine.start_timeout_s=300",
               "engine.vllm_kwargs={not_an_engine_arg: 1}")
    with pytest.raises(EngineError, match=r"could not start.*engine\.vllm_kwargs\."
                                          r"not_an_engine_arg: not an engine argument") as err:
        run(cfg)
    assert "\n" not in str(err.value)
    assert storage.read_dataset(str(tmp_path / "o3" / "generations")).num_rows == 0  # no row sent
