"""LongBench-Write on Ray: load the benchmark, generate, judge, aggregate, report.

    python ray_jobs/evaluate.py --config ray_jobs/configs/eval_tiny.yaml   # see that header

One actor call per item for generation and per (response, replicate, attempt) for judging,
submitted all at once (bounded by `max_in_flight`) so the engines batch them; a response is
judged as soon as it is generated. Every finished generation is written to
`<output>/generations/<id>.json` and every successful judgement to the judge cache, so a rerun
skips finished work. Nothing is dropped silently: malformed benchmark lines become rejects,
failed generations and failed judgements are recorded, and every score carries its denominator.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable

from dataset_builder import config, records, storage
from dataset_builder.config import ConfigError, config_hash
from dataset_builder.llm.base import EngineError, Sampling
from dataset_builder.text import count_words, detect_lang, stable_id
from eval import judge as J
from eval import scoring
from eval.config import EvalConfig, resolve_data_dir
from eval.ruler import ruler_items, ruler_summary

FULL_FILE = "longbench_write.jsonl"
EN_FILE = "longbench_write_en.jsonl"
PUBLISHED = {"temperature": 0.5, "judge_model": "gpt-4o-2024-05-13", "judge_temperature": 0.5,
             "max_new_tokens": 32768, "word_count_mode": "legacy"}


# --------------------------------------------------------------------------- benchmark data

def _reject(line: int, reason: str, raw: str) -> dict:
    return records.reject_record({"line": line, "stage": "benchmark", "reason": reason,
                                  "raw": raw})


def parse_benchmark(data: bytes, en_prompts: set[str] | None = None
                    ) -> tuple[list[dict], list[dict]]:
    """(items, rejects) from LongBench-Write jsonl bytes; every bad line is a reject.

    The output language is "en" for prompts of the English-output subset file (two of its
    prompts are written in Chinese), else detected from the prompt.
    """
    items, rejects, seen = [], [], set()
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        text = raw.decode("utf-8", "replace")
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            rejects.append(_reject(n, f"invalid_utf8: byte {e.start}", text))
            continue
        except json.JSONDecodeError as e:
            rejects.append(_reject(n, f"malformed_json: {e.msg} at column {e.colno}", text))
            continue
        if not isinstance(obj, dict):
            rejects.append(_reject(n, f"not_an_object: {type(obj).__name__}", text))
            continue
        prompt, length, typ = obj.get("prompt"), obj.get("length"), obj.get("type", "unknown")
        if not isinstance(prompt, str) or not prompt.strip():
            rejects.append(_reject(n, "missing_or_empty_prompt", text))
            continue
        if isinstance(length, bool) or not isinstance(length, (int, float)) or length <= 0 \
                or length != int(length):
            rejects.append(_reject(n, f"bad_length: {length!r}", text))
            continue
        item_id = stable_id(f"{prompt}\x00{int(length)}")
        if item_id in seen:
            rejects.append(_reject(n, "duplicate_item", text))
            continue
        seen.add(item_id)
        lang = obj.get("lang") or ("en" if en_prompts is not None and prompt in en_prompts
                                   else ("zh" if en_prompts is not None else detect_lang(prompt)))
        items.append({"id": item_id, "line": n, "prompt": prompt, "type": str(typ),
                      "lang": str(lang), "required_length": int(length),
                      "bucket": scoring.length_bucket(int(length))})
    return items, rejects


def benchmark_uri(data_dir: str, subset: str = "all") -> str:
    """The benchmark file of `subset` ("all" or "en") under `data_dir`."""
    return storage.join(resolve_data_dir(data_dir), EN_FILE if subset == "en" else FULL_FILE)


def load_benchmark(data_dir: str, subset: str = "all", storage_cfg=None
                   ) -> tuple[list[dict], list[dict], dict]:
    """(items, rejects, meta) for `subset`; raises StorageError if the file is missing."""
    base = resolve_data_dir(data_dir)
    uri = benchmark_uri(data_dir, subset)
    storage.check_reachable(uri, storage_cfg, must_exist=True)
    data = storage.read_bytes(uri, storage_cfg)
    en_uri = storage.join(base, EN_FILE)
    en_prompts = None
    if subset == "en":
        en_prompts = None  # every item of the English subset is English output
    elif storage.exists(en_uri, storage_cfg):
        en_items, _ = parse_benchmark(storage.read_bytes(en_uri, storage_cfg))
        en_prompts = {i["prompt"] for i in en_items}
    items, rejects = parse_benchmark(data, en_prompts)
    if subset == "en":
        for i in items:
            i["lang"] = "en"
    meta = {"data_file": uri, "data_sha256": hashlib.sha256(data).hexdigest(),
            "lines": sum(1 for line in data.split(b"\n") if line.strip()),
            "lang_source": "english-subset file" if en_prompts is not None or subset == "en"
            else "detected from prompt"}
    return items, rejects, meta


# --------------------------------------------------------------------------- scheduling

async def run_bounded(jobs: list[Callable[[], Awaitable[dict]]], max_in_flight: int,
                      desc: str = "", progress: bool = True) -> list[dict]:
    """Run every job concurrently, at most `max_in_flight` at once; results in job order."""
    from tqdm.auto import tqdm

    sem = asyncio.Semaphore(max(1, max_in_flight))
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress or not jobs, leave=False)

    async def one(job):
        async with sem:
            out = await job()
        bar.update(1)
        return out

    try:
        return list(await asyncio.gather(*(one(j) for j in jobs)))
    finally:
        bar.close()


def actor_chat(actors: list) -> Callable[[int], J.ChatFn]:
    """chat functions bound round-robin to engine actors: one actor call per request."""
    def for_index(i: int) -> J.ChatFn:
        actor = actors[i % len(actors)]

        async def chat(messages, sampling):
            return await actor.chat.remote(messages, sampling)
        return chat
    return for_index


# --------------------------------------------------------------------------- generation

def generation_hash(cfg: EvalConfig) -> str:
    """What makes a stored response reusable: same model, decoding and seed."""
    e = cfg.engine
    blob = json.dumps([e.backend, e.model, e.base_url, e.max_model_len, cfg.temperature,
                       cfg.top_p, cfg.max_new_tokens, cfg.seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class GenerationStore:
    """One JSON file per finished generation: written once, reused on rerun if its
    generation hash matches (a changed model or decoding regenerates instead)."""

    def __init__(self, uri: str, storage_cfg=None):
        self.uri, self.storage_cfg = uri.rstrip("/"), storage_cfg

    def load(self, gen_hash: str) -> tuple[dict[str, dict], int]:
        fs, path = storage.get_fs(self.uri, self.storage_cfg)
        done, stale = {}, 0
        try:
            files = [f for f in fs.find(path) if f.endswith(".json")
                     and not f.rsplit("/", 1)[-1].startswith("_tmp-")]
        except FileNotFoundError:
            return {}, 0
        for f in files:
            try:
                with fs.open(f, "rb") as fh:
                    rec = json.loads(fh.read())
            except (json.JSONDecodeError, UnicodeDecodeError, OSError):
                stale += 1
                continue
            if rec.get("generation_hash") == gen_hash and rec.get("status") == "ok":
                done[rec["id"]] = rec
            else:
                stale += 1
        return done, stale

    def save(self, rec: dict) -> None:
        storage.write_json(storage.join(self.uri, f"{rec['id']}.json"), rec, self.storage_cfg)


async def generate_one(chat: J.ChatFn, item: dict, cfg: EvalConfig, gen_hash: str) -> dict:
    """One benchmark item through the model under test; failures are records, not raises."""
    seed = J.derive_seed(cfg.seed, "gen", item["id"])
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p,
                        max_tokens=cfg.max_new_tokens, seed=seed)
    base = {**item, "model": cfg.engine.model, "seed": seed, "generation_hash": gen_hash,
            "max_new_tokens": cfg.max_new_tokens}
    t0 = time.monotonic()
    try:
        c = await chat([{"role": "user", "content": item["prompt"]}], sampling)
    except Exception as e:  # noqa: BLE001 -- recorded as this item's failure, never raised
        return {**base, "status": "error", "error": J._error_line(e), "response": None}
    effective = cfg.max_new_tokens
    if cfg.engine.backend == "vllm":
        effective = min(cfg.max_new_tokens, cfg.engine.max_model_len - c.prompt_tokens)
    return {**base, "status": "ok", "response": c.text, "finish_reason": c.finish_reason,
            "prompt_tokens": c.prompt_tokens, "output_tokens": c.output_tokens,
            "max_new_tokens_effective": effective,
            "output_words_legacy": count_words(c.text, "legacy"),
            "output_words_unicode": count_words(c.text, "unicode"),
            "generation_seconds": round(time.monotonic() - t0, 3)}


# --------------------------------------------------------------------------- code version

def code_version() -> str:
    """Hash of the evaluation and shared code (works without .git, e.g. under job submit)."""
    return config.code_version("eval", "dataset_builder")


# --------------------------------------------------------------------------- the run

def _judge_tokenizer(cfg: EvalConfig):
    name = cfg.judge_tokenizer or (cfg.judge.model if cfg.judge.backend == "vllm" else "")
    if not name:
        return None
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(name)


async def _preflight(chat: J.ChatFn, what: str, schema: dict | None) -> None:
    """One tiny request (with the answer schema, if any), so an unreachable endpoint or one
    without structured outputs fails the job before hours of work."""
    try:
        await chat([{"role": "user", "content": "Reply with OK."}],
                   Sampling(temperature=0.0, max_tokens=1, json_schema=schema))
    except Exception as e:  # noqa: BLE001 -- Ray wraps the engine's error types
        hint = " (no structured outputs? set judge_constraint=none)" if schema else ""
        raise EngineError(f"{what} is not answering: {J._error_line(e)}{hint}") from None


def judge_schema(cfg: EvalConfig) -> dict | None:
    """The judge's answer schema, or None for a free-text (validated, retried) judge."""
    constraint = cfg.judge_constraint
    if constraint == "auto":
        constraint = "json_schema" if cfg.judge.backend == "vllm" else "none"
    return J.judge_schema(cfg.judge_analysis_max_chars) if constraint == "json_schema" else None


async def _run_async(cfg: EvalConfig, items: list[dict], ruler: list[dict], engines: list,
                     judges: list) -> dict:
    out, scfg = cfg.output.rstrip("/"), cfg.storage
    gen_hash = generation_hash(cfg)
    gen_store = GenerationStore(storage.join(out, "generations"), scfg)
    ruler_store = GenerationStore(storage.join(out, "ruler_generations"), scfg)
    done, stale = gen_store.load(gen_hash)
    ruler_done, ruler_stale = ruler_store.load(gen_hash) if ruler else ({}, 0)
    gen_chat = actor_chat(engines) if engines else None
    judge_chat = actor_chat(judges) if judges else None
    tokenizer = _judge_tokenizer(cfg) if cfg.judge_enabled else None
    cache = J.JudgeCache(cfg.judge_cache or storage.join(out, "judge_cache"), scfg)
    limiter = J.RateLimiter(cfg.judge_rpm)
    gen_sem = asyncio.Semaphore(max(1, cfg.max_in_flight))
    judge_sem = asyncio.Semaphore(max(1, cfg.max_in_flight))
    counter = {"generated": 0, "skipped": 0, "judge_calls": 0}
    schema = judge_schema(cfg)
    if cfg.judge_enabled and judge_chat:
        await _preflight(judge_chat(0), f"judge {cfg.judge.model!r}", schema)
    if cfg.generate and gen_chat and len(done) + len(ruler_done) < len(items) + len(ruler):
        await _preflight(gen_chat(0), f"model under test {cfg.engine.model!r}", None)

    async def generation(i: int, item: dict, store: GenerationStore, prior: dict) -> dict:
        if item["id"] in prior:
            counter["skipped"] += 1
            return {**prior[item["id"]], **item}
        if not cfg.generate or gen_chat is None:
            return {**item, "status": "error", "response": None,
                    "error": "not_generated: generation disabled and no stored response"}
        async with gen_sem:
            rec = await generate_one(gen_chat(i), item, cfg, gen_hash)
        if rec["status"] == "ok":
            store.save(rec)
            counter["generated"] += 1
        return rec

    def counted(chat: J.ChatFn) -> J.ChatFn:
        async def call(messages, sampling):
            counter["judge_calls"] += 1
            async with judge_sem:
                return await chat(messages, sampling)
        return call

    async def item_pipeline(i: int, item: dict) -> tuple[dict, list[dict]]:
        rec = await generation(i, item, gen_store, done)
        if rec["status"] != "ok" or not cfg.judge_enabled or judge_chat is None:
            return rec, []
        # Every replicate of a response goes to the same judge actor, replicate 0 first and
        # the rest after it: they share its whole prompt, which that judge's prefix cache (vLLM,
        # or the OpenAI API's prompt caching) then serves instead of prefilling it again.
        chat = counted(judge_chat(i))

        def replicate(r: int):
            return J.judge_one(chat, instruction=item["prompt"], response=rec["response"] or "",
                               judge_model=cfg.judge.model, replicate=r, seed=cfg.seed,
                               temperature=cfg.judge_temperature,
                               max_tokens=cfg.judge_max_tokens,
                               max_model_len=cfg.judge.max_model_len,
                               max_attempts=cfg.judge_max_attempts, schema=schema,
                               tokenizer=tokenizer, cache=cache, limiter=limiter,
                               item_id=item["id"])

        first = await replicate(0)
        rest = await asyncio.gather(*(replicate(r) for r in range(1, cfg.judge_samples)))
        return rec, [first, *rest]

    t0 = time.monotonic()
    n_lbw = len(items)
    jobs = [lambda i=i, it=it: item_pipeline(i, it) for i, it in enumerate(items)]
    jobs += [lambda i=i, it=it: generation(n_lbw + i, it, ruler_store, ruler_done)
             for i, it in enumerate(ruler)]
    results = await run_bounded(jobs, len(jobs), desc="LongBench-Write", progress=cfg.progress)
    lbw = results[:n_lbw]
    ruler_recs = results[n_lbw:]
    return {"samples": [r for r, _ in lbw], "judgements": [j for _, js in lbw for j in js],
            "ruler": ruler_recs, "stats": {**counter, "stale_generations": stale + ruler_stale,
                                           "seconds": round(time.monotonic() - t0, 2)}}


def score_samples(samples: list[dict], judgements: list[dict], cfg: EvalConfig) -> list[dict]:
    """Per-sample records with S_l (None if the generation failed) and S_q (None if unjudged)."""
    by_id: dict[str, list[dict]] = {}
    for j in judgements:
        by_id.setdefault(j["id"], []).append(j)
    rows = []
    for s in samples:
        ok = s["status"] == "ok"
        words = count_words(s.get("response") or "", cfg.word_count_mode) if ok else None
        js = sorted(by_id.get(s["id"], []), key=lambda j: j["replicate"])
        comb = J.combine_replicates(js) if js else {
            "s_q": None, "s_q_std": None, "judge_ok": 0, "judge_failed": 0, "ratings": None}
        rows.append({**s, "output_length": words, "word_count_mode": cfg.word_count_mode,
                     "empty_response": ok and not (s.get("response") or "").strip(),
                     "s_l": scoring.length_score(s["required_length"], words) if ok else None,
                     **comb, "judge_truncated": any(j.get("truncated") for j in js),
                     "judge_errors": [e for j in js for e in j.get("errors", [])]})
    return rows


def comparability(cfg: EvalConfig, n_rejects: int) -> list[str]:
    """Reasons the numbers do not compare with the paper's (empty: they do)."""
    why = []
    if cfg.limit:
        why.append(f"limit={cfg.limit}: not the full benchmark")
    if n_rejects:
        why.append(f"{n_rejects} benchmark line(s) rejected")
    if cfg.word_count_mode != PUBLISHED["word_count_mode"]:
        why.append(f"word_count_mode={cfg.word_count_mode} (published: legacy)")
    if cfg.temperature != PUBLISHED["temperature"]:
        why.append(f"temperature={cfg.temperature} (published: 0.5)")
    if cfg.judge_enabled and cfg.judge.model != PUBLISHED["judge_model"]:
        why.append(f"judge={cfg.judge.model} (published: {PUBLISHED['judge_model']})")
    if cfg.judge_enabled and cfg.judge_temperature != PUBLISHED["judge_temperature"]:
        why.append(f"judge_temperature={cfg.judge_temperature} (published: 0.5)")
    if cfg.max_new_tokens < PUBLISHED["max_new_tokens"]:
        why.append(f"max_new_tokens={cfg.max_new_tokens} (published: 32768)")
    return why


def build_results(cfg: EvalConfig, rows: list[dict], judgements: list[dict], rejects: list[dict],
                  meta: dict, ruler_recs: list[dict], stats: dict) -> dict:
    n_boot, seed = cfg.bootstrap_resamples, cfg.seed
    n_items, n_gen = len(rows), sum(r["s_l"] is not None for r in rows)
    n_judged = sum(r["s_q"] is not None for r in rows)
    calls_ok = sum(j["status"] == "ok" for j in judgements)
    failures: dict[str, int] = {}
    for j in judgements:
        if j["status"] != "ok":
            reason = (j["errors"] or ["unknown"])[-1].split(":")[0].split(" (")[0]
            failures[reason] = failures.get(reason, 0) + 1
    judged_rows = [r for r in rows if r["ratings"]]
    dims = {d: {"mean_rating": sum(r["ratings"][d] for r in judged_rows) / len(judged_rows),
                "score": sum(scoring.dimension_score(r["ratings"][d]) for r in judged_rows)
                / len(judged_rows)} for d in scoring.DIMENSIONS} if judged_rows else None
    not_comparable = comparability(cfg, len(rejects))
    if meta["data_file"] == "custom items":
        not_comparable.insert(0, "custom items, not LongBench-Write")
    coverage = {
        "benchmark_lines": meta["lines"], "rejected_lines": len(rejects),
        "items": n_items, "generated": n_gen, "generation_failed": n_items - n_gen,
        "judged": n_judged, "judge_coverage": n_judged / n_gen if n_gen else None,
        "judge_replicates_expected": n_gen * cfg.judge_samples if cfg.judge_enabled else 0,
        "judge_replicates_ok": calls_ok, "judge_replicates_failed": len(judgements) - calls_ok,
        "judge_failure_reasons": failures,
        "empty_responses": sum(bool(r["empty_response"]) for r in rows),
        "judge_truncated": sum(bool(r["judge_truncated"]) for r in rows),
        "complete": not rejects and n_gen == n_items and (
            not cfg.judge_enabled or n_judged == n_gen),
    }
    return {
        "benchmark": "LongBench-Write",
        "overall": scoring.summarize(rows, n_boot, seed),
        "by_bucket": scoring.group_summaries(rows, "bucket", n_boot, seed,
                                             [b[0] for b in scoring.BUCKETS]),
        "by_lang": scoring.group_summaries(rows, "lang", n_boot, seed, ["en", "zh"]),
        "by_type": scoring.group_summaries(rows, "type", n_boot, seed),
        "dimensions": dims,
        "coverage": coverage,
        "published_comparable": not not_comparable,
        "not_comparable_because": not_comparable,
        "protocol": {
            "subset": cfg.subset, "limit": cfg.limit, **meta,
            "model": cfg.engine.model, "backend": cfg.engine.backend,
            "chat_template": "the model's own" if cfg.engine.backend == "vllm"
            else "the endpoint's",
            "decoding": {"temperature": cfg.temperature, "top_p": cfg.top_p,
                         "max_new_tokens": cfg.max_new_tokens,
                         "max_model_len": cfg.engine.max_model_len,
                         "seed": cfg.seed, "per_sample_seed": "sha256(seed:gen:id)"},
            "judge": {"enabled": cfg.judge_enabled, "model": cfg.judge.model,
                      "backend": cfg.judge.backend, "base_url": cfg.judge.base_url,
                      "temperature": cfg.judge_temperature, "max_tokens": cfg.judge_max_tokens,
                      "samples": cfg.judge_samples, "max_attempts": cfg.judge_max_attempts,
                      "constraint": "json_schema" if judge_schema(cfg) else "none",
                      "analysis_max_chars": cfg.judge_analysis_max_chars,
                      "schema_sha256": J.sha(json.dumps(judge_schema(cfg), sort_keys=True))
                      if judge_schema(cfg) else None,
                      "prompt_version": J.PROMPT_VERSION,
                      "prompt_hash": J.PROMPT_HASH, "max_model_len": cfg.judge.max_model_len},
            "word_count_mode": cfg.word_count_mode,
            "scoring": "S_l, S_q, S as published (NOTICE); S_q over judged responses only",
            "bootstrap": {"resamples": n_boot, "ci": 0.95, "method": "percentile",
                          "seed": seed},
            "code_version": code_version(), "config_hash": config_hash(cfg), "seed": seed,
            "generation_hash": generation_hash(cfg),
        },
        "ruler": ruler_summary(ruler_recs, cfg.word_count_mode) if ruler_recs else None,
        "run": stats,
    }


def check_config(cfg: EvalConfig, engines_given: bool, judges_given: bool) -> None:
    """One clear ConfigError for settings that cannot run, before any engine starts."""
    problems = []
    if cfg.generate and not engines_given and not cfg.engine.model:
        problems.append("engine.model is required (the model under test)")
    if cfg.judge_enabled and not judges_given and not cfg.judge.model:
        problems.append("judge.model is required (or set judge_enabled=false)")
    for name in ("judge_samples", "judge_max_attempts", "max_new_tokens", "judge_max_tokens",
                 "num_engines", "num_judges", "max_in_flight"):
        if getattr(cfg, name) < 1:
            problems.append(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.limit < 0 or cfg.ruler_prompts < 0 or cfg.bootstrap_resamples < 0:
        problems.append("limit, ruler_prompts and bootstrap_resamples must be >= 0")
    if cfg.ruler and (not cfg.ruler_lengths or min(cfg.ruler_lengths) < 1):
        problems.append(f"ruler_lengths must be positive, got {cfg.ruler_lengths}")
    if problems:
        raise ConfigError("; ".join(problems))


def custom_items(rows: list[dict]) -> tuple[list[dict], list[dict], dict]:
    """Items of another prompt set (the DPO pairs job's samples) scored the benchmark's way:
    each row has id, prompt, lang, required_length and any extra keys, which are kept."""
    items = [{"type": "custom", **r, "bucket": scoring.length_bucket(r["required_length"])}
             for r in rows]
    return items, [], {"data_file": "custom items", "lines": len(items),
                       "lang_source": "given", "data_sha256": None}


def run_eval(cfg: EvalConfig, engines: list | None = None, judges: list | None = None,
             items: list[dict] | None = None) -> dict:
    """The whole evaluation; engine/judge actors are started here unless given (then reused
    and left running). `items`: score these (`custom_items`) instead of the benchmark.
    Returns results.json's content."""
    import ray

    from dataset_builder.config import save_resolved_config
    from eval.report import write_report

    check_config(cfg, engines is not None, judges is not None)
    items, rejects, meta = load_benchmark(cfg.data_dir, cfg.subset, cfg.storage) \
        if items is None else custom_items(items)
    if cfg.limit:
        items = items[:cfg.limit]
    ruler = ruler_items(cfg.ruler_lengths, cfg.ruler_prompts) if cfg.ruler else []
    started = []
    if engines is None and cfg.generate:
        from dataset_builder.llm.actor import start_engines
        engines = start_engines(cfg.engine, cfg.num_engines)
        started += engines
    if judges is None and cfg.judge_enabled:
        from dataset_builder.llm.actor import start_engines
        judges = start_engines(cfg.judge, cfg.num_judges)
        started += judges
    try:
        raw = asyncio.run(_run_async(cfg, items, ruler, engines or [], judges or []))
    finally:
        for a in started:
            ray.kill(a)
    rows = score_samples(raw["samples"], raw["judgements"], cfg)
    results = build_results(cfg, rows, raw["judgements"], rejects, meta, raw["ruler"],
                            raw["stats"])
    out, scfg = cfg.output.rstrip("/"), cfg.storage
    storage.write_jsonl(storage.join(out, "samples.jsonl"), rows, scfg)
    storage.write_jsonl(storage.join(out, "judgements.jsonl"), raw["judgements"], scfg)
    storage.write_jsonl(storage.join(out, "rejects.jsonl"), rejects, scfg)
    if ruler:
        storage.write_jsonl(storage.join(out, "ruler.jsonl"), raw["ruler"], scfg)
    save_resolved_config(cfg, out, scfg)
    storage.write_json(storage.join(out, "results.json"), results, scfg)
    write_report(results, rows, raw["ruler"], out, scfg)
    return results


__all__ = [
    "GenerationStore",
    "build_results",
    "custom_items",
    "generate_one",
    "load_benchmark",
    "parse_benchmark",
    "run_bounded",
    "run_eval",
    "score_samples",
]
