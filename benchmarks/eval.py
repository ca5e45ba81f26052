"""Judging throughput: our scheduler against the published script's approach, one run.

    python benchmarks/eval.py                      # default: 128 responses, demo model judge
    python benchmarks/eval.py --responses 256 --json out/benchmarks/eval.json

A local `vllm serve` (the demo model, SmolLM2-135M-Instruct, on 127.0.0.1) is the judge's
OpenAI-compatible endpoint. Both sides judge the same N responses with the same requests
(our judge prompt, JSON-schema constraint, temperature 0, a fixed seed per request) and
score the answers:

- reference: the published eval_quality.py approach, a pool of 8 workers, each making one
  blocking HTTP call at a time, parsing and aggregating as published (per-dimension means,
  then (m - 1) * 25);
- ours: the evaluation's judge stage (eval.stages.JudgeTask rows through the engine stage,
  one replica holding an async OpenAI client, `--concurrency` rows in flight, bounded by
  judge.max_concurrency), parsed and scored with eval.judge / eval.scoring; its time
  includes the stage's start.

The prefix cache of the server is reset before each side. The table compares time, coverage
and S_q. `identical_scores` checks the scoring, as the target asks (same judge outputs, same
scores): wherever both runs got the same answer they give the same six ratings, and our parser
and aggregate applied to every reference answer reproduce the published parse and S_q. Greedy
decoding in vLLM is not batch-invariant, so a few answers may differ between a batch-8 and a
batch-128 run; `identical_outputs` and `all_ratings_equal` count that openly. The last line is one JSON object (also written to --json).

What bounds the ratio on a 2-core CPU: prefill is compute-bound and costs the same however
requests are scheduled; only decoding gains from larger batches, and on 2 cores that gain
flattens out early. The run therefore also measures the server alone (`decode_ceiling_speedup`:
forced-length requests with short prompts, 8 blocking workers against all at once), the most
any scheduler could gain here. On GPUs, and against API judges whose latency is not compute on
this machine, concurrency pays far more.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx

from dataset_builder.llm.base import EngineConfig, Sampling
from dataset_builder.llm.server import free_port, start_server, stop_server
from eval import judge as J
from eval.scoring import DIMENSIONS, quality_score

SENTENCES = [
    "The history of the subject begins with a handful of early experiments.",
    "Researchers soon noticed that the results depended on careful preparation.",
    "In the following decades, the idea spread from laboratories to classrooms.",
    "Critics argued that the method was expensive and difficult to reproduce.",
    "Supporters replied that its benefits outweighed the practical costs.",
    "Today the practice is common in many countries around the world.",
    "A typical example shows how a small change can have large effects.",
    "The author recalls a winter morning when everything seemed to change.",
    "Economic factors played a major role in shaping public opinion.",
    "Finally, the future of the field depends on how new tools are adopted.",
    "Several open questions remain, and they deserve further attention.",
    "Students often find the topic confusing at first, but practice helps.",
]


def reset_prefix_cache(base: str) -> None:
    httpx.post(f"{base}/reset_prefix_cache", timeout=30)


def make_items(n: int, words: int, seed: int) -> list[dict]:
    """N (instruction, response) pairs: LongBench-Write prompts, deterministic responses."""
    from eval.config import DEFAULT_DATA_DIR, resolve_data_dir
    from eval.longbench_data import load_benchmark
    prompts, _, _ = load_benchmark(resolve_data_dir(DEFAULT_DATA_DIR), "all")
    rng = random.Random(seed)
    items = []
    for i in range(n):
        p = prompts[i % len(prompts)]
        text, count = [], 0
        target = rng.randint(words // 2, words * 3 // 2)
        while count < target:
            s = rng.choice(SENTENCES)
            text.append(s)
            count += len(s.split())
        items.append({"id": f"bench-{i:04d}", "instruction": p["prompt"],
                      "response": " ".join(text)})
    return items


# ----------------------------------------------------------------------------- reference

def _extract_info(pattern, text):
    m = re.search(pattern, text, re.DOTALL)
    return m.group(1) if m else None


def published_parse(output: str):
    """eval_quality.py's parsing: strip a ```json fence, drop newlines, json.loads, check dims."""
    if "```json" in output:
        output = _extract_info(r"```json\n(.*?)\n```", output) or ""
    try:
        scores = json.loads(output.replace("\n", ""))
    except json.JSONDecodeError:
        return None
    if isinstance(scores, dict) and all(d in scores for d in DIMENSIONS):
        return scores
    return None


def run_reference(requests: list[list[dict]], url: str, workers: int = 8) -> tuple[list, float]:
    """8 workers, each call blocking; up to len(requests[i]) tries per response as published."""
    client = httpx.Client(timeout=600)

    def work(bodies):
        output = ""
        for body in bodies:
            resp = client.post(url, json=body)
            output = resp.json()["choices"][0]["message"]["content"] if resp.status_code == 200 \
                else ""
            scores = published_parse(output)
            if scores is not None:
                return scores, output
        return None, output

    t0 = time.monotonic()
    with ThreadPoolExecutor(workers) as ex:
        out = list(ex.map(work, requests))
    elapsed = time.monotonic() - t0
    client.close()
    return out, elapsed


def decode_ceiling(url: str, n: int, workers: int, tokens: int = 96) -> dict:
    """What the server itself gains from concurrency, measured beside the judging runs: N
    requests with short prompts and `tokens` forced output tokens each (no prefill to speak
    of), sent by `workers` blocking workers and then all at once. Its ratio bounds what any
    scheduler can gain over the 8-worker approach on this machine."""
    def body(i):
        return {"model": "judge", "temperature": 0.0, "max_tokens": tokens, "min_tokens": tokens,
                "ignore_eos": True, "messages": [{"role": "user", "content": f"Topic {i}: go on."}]}

    def run(concurrency):
        limits = httpx.Limits(max_connections=concurrency)  # httpx pools 100 by default
        with httpx.Client(timeout=600, limits=limits) as client, \
                ThreadPoolExecutor(concurrency) as ex:
            t0 = time.monotonic()
            out = sum(ex.map(lambda i: client.post(url, json=body(i)).json()["usage"]
                             ["completion_tokens"], range(n)))
            return out / (time.monotonic() - t0)
    few, many = run(workers), run(n)
    return {"tok_s_workers": round(few, 1), "tok_s_all": round(many, 1),
            "decode_ceiling_speedup": round(many / few, 3)}


def published_aggregate(all_scores: list[dict]) -> float:
    total = {d: (sum(float(s[d]) for s in all_scores) / len(all_scores) - 1) * 25
             for d in DIMENSIONS}
    return sum(total.values()) / len(total)


# ----------------------------------------------------------------------------- ours

def run_ours(items: list[dict], cfg: EngineConfig, args, tokenizer_name: str
             ) -> tuple[list, float]:
    """The evaluation's judge stage as a job runs it: one row per response through the engine
    stage (one replica: an OpenAI client to the server, `--concurrency` rows in flight). The
    time includes the stage's start (its actor and the judge tokenizer)."""
    import dataclasses

    import ray

    from dataset_builder.core.records import todo
    from dataset_builder.llm.stage import engine_stage, engines_up
    from eval.config import EvalConfig
    from eval.stages import JudgeTask
    ecfg = EvalConfig(judge=dataclasses.replace(cfg, in_flight=args.concurrency),
                      judge_temperature=0.0, judge_max_tokens=args.max_tokens,
                      judge_max_attempts=args.attempts, judge_constraint="json_schema",
                      judge_analysis_max_chars=args.analysis_max_chars,
                      judge_tokenizer=tokenizer_name, seed=args.seed, progress=False)
    rows = [{**todo({"id": it["id"], "kind": "lbw", "prompt": it["instruction"],
                     "response": it["response"]}), "status": "ok"} for it in items]
    t0 = time.monotonic()
    with engines_up(ecfg.judge) as up_key:
        ds = engine_stage(ray.data.from_items(rows), ecfg.judge, JudgeTask,
                          {"cfg": ecfg, "cache_uri": "", "rpm": 0.0}, up_key)
        out = {r["id"]: json.loads(r["payload"])["judgements"][0] for r in ds.take_all()}
    return [out[it["id"]] for it in items], time.monotonic() - t0


# ----------------------------------------------------------------------------- main

def build_requests(items, cfg, args, tokenizer) -> list[list[dict]]:
    """The exact request bodies judge_one sends (attempt 0..attempts-1) for each item."""
    from dataset_builder.llm.openai_engine import OpenAIEngine
    engine = OpenAIEngine(cfg)
    out = []
    for it in items:
        f = J.fit_response(it["instruction"], it["response"], args.max_model_len,
                           args.max_tokens, tokenizer)
        msgs = J.judge_messages(it["instruction"], f.text, f.truncated)
        out.append([engine._body(msgs, Sampling(
            temperature=0.0, top_p=1.0, max_tokens=args.max_tokens,
            seed=J.derive_seed(args.seed, it["id"], 0, a),
            json_schema=J.judge_schema(args.analysis_max_chars)))
            for a in range(args.attempts)])
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--responses", type=int, default=128, help="responses to judge")
    ap.add_argument("--response-words", type=int, default=60,
                    help="mean words per synthetic response")
    ap.add_argument("--model", default="", help="judge model dir (default: the demo model)")
    ap.add_argument("--max-model-len", type=int, default=4096)
    # Under a grammar the model may spell the analysis in short tokens (up to one per
    # character): the cap leaves room for the whole bounded answer, so no answer is cut.
    ap.add_argument("--max-tokens", type=int, default=384, help="judge answer cap")
    ap.add_argument("--analysis-max-chars", type=int, default=200,
                    help="maxLength of the judge's analysis in the answer schema")
    ap.add_argument("--concurrency", type=int, default=128, help="ours: requests in flight")
    ap.add_argument("--workers", type=int, default=8, help="reference: blocking workers")
    ap.add_argument("--attempts", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                    help="skip the server's decode-only concurrency ceiling")
    ap.add_argument("--json", default="out/benchmarks/eval.json", help="where to write JSON")
    args = ap.parse_args(argv)

    import ray
    from transformers import AutoTokenizer

    from dataset_builder.models import demo_model
    model = args.model or str(demo_model())
    tokenizer = AutoTokenizer.from_pretrained(model)
    items = make_items(args.responses, args.response_words, args.seed)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = EngineConfig(backend="openai", model="judge", base_url=f"{base}/v1",
                       max_model_len=args.max_model_len, max_concurrency=args.concurrency,
                       num_cpus=0.5, max_retries=2)
    log = Path(tempfile.mkdtemp(prefix="bench-eval-")) / "vllm_serve.log"
    print(f"starting vllm serve ({model}) on {base}; log {log}", file=sys.stderr)
    proc = start_server(model, port, args.max_model_len, log)
    try:
        if not ray.is_initialized():
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
        requests = build_requests(items, cfg, args, tokenizer)
        httpx.post(f"{base}/v1/chat/completions", json=requests[0][0], timeout=600)  # warm up
        reset_prefix_cache(base)
        ref, ref_s = run_reference(requests, f"{base}/v1/chat/completions", args.workers)
        reset_prefix_cache(base)
        ours, ours_s = run_ours(items, cfg, args, model)
        ceiling = decode_ceiling(f"{base}/v1/chat/completions", len(items), args.workers) \
            if args.ceiling else {}
    finally:
        stop_server(proc)

    ref_scores = [s for s, _ in ref]
    our_ratings = [r.get("ratings") if r["status"] == "ok" else None for r in ours]
    same = [i for i, (r, (_, o)) in enumerate(zip(ours, ref)) if r.get("raw") == o]

    def equal(a, b):
        return (a is None and b is None) or (a is not None and b is not None and all(
            float(a[d]) == float(b[d]) for d in DIMENSIONS))
    # Scoring identity, as the target asks: for the same judge outputs, the same scores.
    # (1) wherever both runs got the same answer, the same six ratings; (2) our parser and
    # aggregate on every reference answer reproduce the published parse and aggregate.
    ratings_equal_on_same = all(equal(our_ratings[i], ref_scores[i]) for i in same)
    reparsed = [J.parse_judgement(o)[0] for _, o in ref]
    parser_agrees = all(equal(a, b) for a, b in zip(reparsed, ref_scores))
    ref_ok = [s for s in ref_scores if s is not None]
    ours_ok = [r for r in our_ratings if r is not None]
    reparsed_ok = [r for r in reparsed if r is not None]
    ref_sq = published_aggregate(ref_ok) if ref_ok else None
    ours_sq = sum(quality_score(r) for r in ours_ok) / len(ours_ok) if ours_ok else None
    ours_sq_on_ref = (sum(quality_score(r) for r in reparsed_ok) / len(reparsed_ok)
                      if reparsed_ok else None)
    identical = ratings_equal_on_same and parser_agrees and ref_sq is not None \
        and ours_sq_on_ref is not None and abs(ref_sq - ours_sq_on_ref) < 1e-9
    # Greedy decoding is not batch-invariant in vLLM (batch 8 vs 128 sums floats in another
    # order), so a few answers can differ between the runs; they are counted, not hidden.
    per_item_equal = all(equal(a, b) for a, b in zip(our_ratings, ref_scores))
    same_outputs = len(same)
    n = len(items)
    rows = [("reference: 8 blocking workers", ref_s, len(ref_ok), ref_sq),
            (f"ours: judge stage, {args.concurrency} in flight", ours_s, len(ours_ok), ours_sq)]
    print(f"judging {n} responses (~{args.response_words} words each) with {model} "
          f"via vllm serve, temperature 0, JSON-schema constraint")
    print(f"{'scheduler':<38}{'seconds':>9}{'resp/s':>9}{'judged':>9}{'S_q':>9}")
    for name, secs, ok, sq in rows:
        print(f"{name:<38}{secs:>9.2f}{n / secs:>9.2f}{ok:>6}/{n:<3}"
              f"{(f'{sq:.3f}' if sq is not None else 'n/a'):>8}")
    if ceiling:
        print(f"server alone, {n} forced-length requests: {ceiling['tok_s_workers']} tok/s with "
              f"{args.workers} workers, {ceiling['tok_s_all']} all at once "
              f"(decode ceiling {ceiling['decode_ceiling_speedup']}x)")
    print(f"identical judge outputs: {same_outputs}/{n} (ratings equal on them: "
          f"{ratings_equal_on_same}); our parser + aggregate on the reference outputs: S_q "
          f"{ours_sq_on_ref} (agrees: {parser_agrees}); all {n} ratings equal: {per_item_equal}")
    result = {"responses": n, "ours_seconds": round(ours_s, 3),
              "reference_seconds": round(ref_s, 3), "speedup": round(ref_s / ours_s, 3),
              "identical_scores": bool(identical), "identical_outputs": same_outputs,
              "parser_agrees_on_same_outputs": bool(parser_agrees),
              "ratings_equal_where_outputs_equal": bool(ratings_equal_on_same),
              "all_ratings_equal": bool(per_item_equal), "ours_s_q_on_reference_outputs":
              ours_sq_on_ref,
              "ours_s_q": ours_sq, "reference_s_q": ref_sq, "judged_ours": len(ours_ok),
              "judged_reference": len(ref_ok), "reference_workers": args.workers,
              "ours_concurrency": args.concurrency, "model": model, **ceiling}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
