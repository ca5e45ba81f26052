"""AgentWrite scheduling benchmark (DESIGN.md §8): one engine, one model, one instruction set.

    python -m benchmarks.agentwrite                       # demo model, 64 instructions
    python -m benchmarks.agentwrite --instructions 16 --model /path/to/model
    python -m benchmarks.agentwrite --only pipeline,replay   # the target ratio alone (~1/3 time)

Plans are generated once (the real plan step, regex-constrained, 5 to 8 paragraphs of 40 to 100
words: the paper's plans are longer still) and shared by every scheduler; every write step's
length is forced from its plan budget (min_tokens = max_tokens, ignore_eos), so the schedulers
differ only in scheduling. Before each run the prefix cache is reset and then holds what the
plan step leaves in a real run: each instruction's plan prompt and the plan's generated ids
(prefilled, untimed, the same for every scheduler).
  pipeline   the generation job itself: Ray Data reads, the engine stage (whole instructions,
             rows refilled as they finish), the Datasink; timed around the whole job
  replay     the exact write requests the pipeline sent (rebuilt from its journal), all at
             once, no dependencies (the ceiling); row by row, so the engine runs a row's
             steps together and they share the row's prefix in the KV cache
  replay_step  the same requests step-major (every row's step 1, then every step 2, ...):
             no dependencies, but a row's steps rarely share the batch (as in any schedule
             that waits for a step before the next)
  loop       the same whole-instruction scheduling as a driver loop (in_flight instructions at
             once, longest first as in the job, no Ray Data): pipeline vs loop is the cost of
             the job around the scheduling
  reference  the original AgentWrite loop: 8 workers, each walks one instruction step by step
  round      one pass per step with a barrier between steps (stage-per-step pipelines)
  append     the pipeline (the job) again with layout=append (prefix reuse only)
  pipeline_1row  the pipeline with one-row engine-stage tasks (engine.rows_per_task=1), as
             before tasks of several rows (not in the default set)
All of them use one engine, an EngineActor in a local Ray: the job's engine stage reaches it
with `engine.attach`, the others from the driver, so every scheduler sees the same engine.
Prints a table; the last line is one JSON object. Also writes out/benchmarks/agentwrite.json.
The default run takes about 40 minutes on 2 CPU cores (~40k output tokens per scheduler).
What bounds the ratios there: prefill and long-context attention cost the same under every
scheduler and only decoding gains from batching, so the replay ceiling itself is only ~1.6x
reference and ~1.1x round scheduling on this machine (2026-11-25); see docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import tempfile
import time

from dataset_builder.agentwrite import (
    AgentWriteConfig,
    Journal,
    _plan,
    _seed,
    plan_messages,
    run_instruction,
    step_messages,
    step_sampling,
)
from dataset_builder.core.text import stable_id
from dataset_builder.llm import EngineConfig, RemoteEngine
from dataset_builder.llm.base import Sampling
from dataset_builder.llm.batch_stats import fill

ENGINE = "bench-engine"

TOPICS = ["urban rivers", "solar power", "the history of tea", "deep-sea life", "public libraries",
          "bicycle commuting", "volcanoes", "bees and pollination", "early computers",
          "mountain railways", "coral reefs", "the printing press", "desert cities",
          "night skies", "ancient roads", "sleep science"]
FORMS_EN = ["Write a detailed essay about {t}.", "Write a long magazine feature on {t}."]
FORMS_ZH = ["请写一篇关于{t}的长篇文章。", "请以{t}为主题写一篇详细的报告。"]


def instructions(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        forms = FORMS_ZH if i % 4 == 3 else FORMS_EN
        p = forms[(i // len(TOPICS)) % 2].format(t=t) + f" (variant {i})"
        rows.append({"id": stable_id(p), "prompt": p, "required_words": None, "lang": "en"})
    return rows


class Recorder:
    """Wraps the engine: records every write request (messages, sampling) and its usage."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    async def chat(self, messages, sampling):
        c = await self.engine.chat(messages, sampling)
        self.calls.append((messages, sampling, c))
        return c


async def _warm_plans(engine, rows, plans, cfg) -> None:
    """Leave in the prefix cache what each plan step leaves in a real run: the plan prompt
    followed by the ids the model generated for the plan (a prefill of the unfinished
    assistant turn; its end-of-turn id is dropped, as the plan step never computes its KV)."""
    async def one(r):
        p = plans[r["id"]]
        turn = {"role": "assistant", "content": p["text"], "token_ids": p["token_ids"]}
        await engine.chat([*plan_messages(r, cfg), turn], Sampling(temperature=0.0, max_tokens=1))
    await asyncio.gather(*(one(r) for r in rows))


class Engine(RemoteEngine):
    """The shared EngineActor, seen from the driver."""

    async def reset_prefix_cache(self) -> None:
        await self.actor.reset_prefix_cache.remote()

    async def batch(self) -> dict:
        return (await self.actor.metrics.remote())["batch"]


async def _timed(engine, coro_fn, warm):
    await engine.reset_prefix_cache()
    await warm()
    rec = Recorder(engine)
    b0, t0 = await engine.batch(), time.perf_counter()
    await coro_fn(rec)
    wall = time.perf_counter() - t0
    batch = fill(b0, await engine.batch())
    out = sum(c.output_tokens for _, _, c in rec.calls)
    prompt = sum(c.prompt_tokens for _, _, c in rec.calls)
    cached = sum(c.cached_tokens for _, _, c in rec.calls)
    return {"seconds": wall, "output_tokens": out, "requests": len(rec.calls),
            "tok_s": out / wall, "prefix_hit_rate": cached / max(prompt, 1), **batch}, rec


def _seed_journal(rows, plans, d: str | None = None) -> str:
    d = d or tempfile.mkdtemp(prefix="bench-journal-")
    for r in rows:
        Journal(d, r["id"]).save(0, plans[r["id"]])
    return d


async def _job(engine, rows, plans, cfg, args, warm, rows_per_task: int | None = None
               ) -> tuple[dict, list]:
    """The generation job on `rows` with their plans journaled (so it writes only), timed
    around `run`; returns the figures and the write requests it sent, rebuilt from its journal."""
    from dataset_builder.generation import GenerateConfig, run
    from dataset_builder.selection import SelectionConfig
    out = tempfile.mkdtemp(prefix="bench-job-")
    with open(f"{out}/in.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    _seed_journal(rows, plans, f"{out}/out/_journal")
    gcfg = GenerateConfig(
        input=f"{out}/in.jsonl", output=f"{out}/out", progress=False, agentwrite=cfg,
        commit_every=max(1, len(rows) // 4), selection=SelectionConfig(0, llm_estimate=False),
        engine=EngineConfig(model=args.model, attach=ENGINE, max_model_len=4096,
                            in_flight=args.in_flight,
                            rows_per_task=rows_per_task or EngineConfig.rows_per_task))
    await engine.reset_prefix_cache()
    await warm()
    b0, t0 = await engine.batch(), time.perf_counter()
    stats = await asyncio.to_thread(run, gcfg)
    wall = time.perf_counter() - t0
    batch = fill(b0, await engine.batch())
    from dataset_builder.core import storage
    recs = storage.read_dataset(f"{out}/out/generations").to_pylist()
    out_tok = sum(sum(r["step_output_tokens"][1:]) for r in recs)
    calls = []
    for r in rows:
        steps = [e for k, e in sorted(Journal(f"{out}/out/_journal", r["id"]).load().items()) if k]
        for k, w in enumerate(plans[r["id"]]["plan"], start=1):
            calls.append((k, step_messages(r, plans[r["id"]], steps[:k - 1], cfg),
                          step_sampling(w["words"], cfg, _seed(cfg, r["id"], k, 0))))
    return {"seconds": wall, "output_tokens": out_tok, "requests": stats["generated_steps"],
            "tok_s": out_tok / wall, "prefix_hit_rate": stats["prefix_hit_rate_write_steps"],
            "written": stats["written_this_run"], **batch}, calls


async def _loop(rows, plans, cfg, in_flight, longest_first=False):
    """Driver-loop scheduling: `in_flight` instructions at once, each walked step by step;
    longest_first: started in the job's order, else in input order."""
    from dataset_builder.selection import longest_first_key
    journal = _seed_journal(rows, plans)
    if longest_first:
        rows = sorted(rows, key=longest_first_key)
    sem = asyncio.Semaphore(in_flight)

    async def one(rec, r):
        async with sem:
            return await run_instruction(rec, r, cfg, journal)
    return lambda rec: asyncio.gather(*(one(rec, r) for r in rows))


async def _round(rows, plans, cfg):
    async def go(rec):
        done = {r["id"]: [] for r in rows}
        for k in range(1, max(len(p["plan"]) for p in plans.values()) + 1):
            todo = [r for r in rows if len(plans[r["id"]]["plan"]) >= k]

            async def step(r, k=k):
                p = plans[r["id"]]
                msgs = step_messages(r, p, done[r["id"]], cfg)
                c = await rec.chat(msgs, step_sampling(p["plan"][k - 1]["words"], cfg, 0))
                done[r["id"]].append({"text": c.text.strip(), "token_ids": c.token_ids})
            await asyncio.gather(*(step(r) for r in todo))  # the barrier
    return go


async def main(args) -> dict:
    import ray

    from dataset_builder.llm.actor import start_engines
    from dataset_builder.models import demo_model
    from ray_jobs.common import init_ray

    args.model = args.model or str(demo_model())
    ecfg = EngineConfig(model=args.model, max_model_len=4096, max_num_seqs=args.max_num_seqs,
                        cpu_kvcache_gib=args.kv_gib, block_size=args.block_size,
                        batch_stats=True)
    init_ray()
    actors = start_engines(ecfg, 1, name=ENGINE)  # noqa: F841 (the handle keeps it alive)
    engine = Engine(ENGINE)
    cfg = AgentWriteConfig(min_paragraphs=args.min_paragraphs, max_paragraphs=args.max_paragraphs,
                           min_paragraph_words=args.min_words, max_paragraph_words=args.max_words, rescale_plan=True,
                           max_main_point_chars=100, tokens_per_word=1.0, force_lengths=True,
                           plan_retries=5)
    rows = instructions(args.instructions)
    plans = {}
    for r, res in zip(rows, await asyncio.gather(*(_plan(engine, r, cfg) for r in rows),
                                                 return_exceptions=True)):
        if not isinstance(res, Exception):
            plans[r["id"]] = res[1]
    # The job selects by length: each row asks for its plan's total (every scheduler gets the
    # same rows, so the same prompts).
    rows = [{**r, "required_words": sum(p["words"] for p in plans[r["id"]]["plan"])}
            for r in rows if r["id"] in plans]
    results = {}

    def warm():
        return _warm_plans(engine, rows, plans, cfg)
    results["pipeline"], write_calls = await _job(engine, rows, plans, cfg, args, warm)
    results["replay"], _ = await _timed(engine, lambda e: asyncio.gather(
        *(e.chat(m, s) for _, m, s in write_calls)), warm)
    if "replay_step" in args.only:  # the same requests step-major: a row's steps seldom together
        by_step = sorted(write_calls, key=lambda c: c[0])  # stable: rows in order within a step
        results["replay_step"], _ = await _timed(engine, lambda e: asyncio.gather(
            *(e.chat(m, s) for _, m, s in by_step)), warm)
    if "loop" in args.only:  # the job's scheduling without Ray Data: what the job itself costs
        results["loop"], _ = await _timed(
            engine, await _loop(rows, plans, cfg, args.in_flight, longest_first=True), warm)
    if "reference" in args.only:
        results["reference"], _ = await _timed(engine, await _loop(rows, plans, cfg, 8),
                                               warm)
    if "round" in args.only:
        results["round"], _ = await _timed(engine, await _round(rows, plans, cfg), warm)
    if "pipeline_1row" in args.only:  # the job with one-row engine-stage tasks (the old way)
        results["pipeline_1row"], _ = await _job(engine, rows, plans, cfg, args, warm, 1)
    if "append" in args.only:
        append = dataclasses.replace(cfg, layout="append")
        results["append"], _ = await _job(engine, rows, plans, append, args, warm)
    ray.shutdown()
    return _report(results, len(rows))


def _report(results: dict, n: int) -> dict:
    print(f"{'scheduler':<10} {'seconds':>8} {'requests':>8} {'out tok':>8} {'tok/s':>8} "
          f"{'prefix hit':>10} {'batch fill':>10} {'queued':>7} {'KV used':>7} {'preempt':>7}")
    for name, r in results.items():
        print(f"{name:<10} {r['seconds']:>8.1f} {r['requests']:>8} {r['output_tokens']:>8} "
              f"{r['tok_s']:>8.1f} {r['prefix_hit_rate']:>10.2%} {r['batch_fill']:>10.1%} "
              f"{r['queued_share']:>7.1%} {r['kv_usage_mean']:>7.1%} {r['preemptions']:>7}")
    p = results["pipeline"]["tok_s"]
    summary = {
        **{f"pipeline_vs_{k}": round(p / results[k]["tok_s"], 3)
           for k in ("replay", "replay_step", "loop", "reference", "round") if k in results},
        "prefix_hit_rate_paper": round(results["pipeline"]["prefix_hit_rate"], 4),
        "prefix_hit_rate_replay": round(results["replay"]["prefix_hit_rate"], 4),
        **({"prefix_hit_rate_append": round(results["append"]["prefix_hit_rate"], 4)}
           if "append" in results else {}),
        "instructions": n, "output_tokens": results["pipeline"]["output_tokens"],
        "tok_s": {k: round(v["tok_s"], 1) for k, v in results.items()},
        "batch_fill": {k: round(v["batch_fill"], 3) for k, v in results.items()},
    }
    os.makedirs("out/benchmarks", exist_ok=True)
    with open("out/benchmarks/agentwrite.json", "w") as f:
        json.dump({"summary": summary, "runs": results}, f, indent=2)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--instructions", type=int, default=64)
    ap.add_argument("--model", default=None, help="model dir (default: the demo model)")
    ap.add_argument("--min-paragraphs", type=int, default=5)
    ap.add_argument("--max-paragraphs", type=int, default=8)
    ap.add_argument("--min-words", type=int, default=40, help="smallest step budget (tokens)")
    ap.add_argument("--max-words", type=int, default=100, help="largest step budget (tokens)")
    ap.add_argument("--max-num-seqs", type=int, default=128)
    ap.add_argument("--in-flight", type=int, default=128)
    ap.add_argument("--kv-gib", type=int, default=4, help="CPU KV cache (GiB)")
    ap.add_argument("--block-size", type=int, default=32, help="KV block size (prefix-cache grain)")
    ap.add_argument("--only", default="pipeline,replay,replay_step,loop,reference,round,append",
                    type=lambda v: set(v.split(",")), help="schedulers to run (pipeline and "
                    "replay always run: replay replays the pipeline's requests)")
    asyncio.run(main(ap.parse_args()))
