"""LongBench-Write on Ray: load the benchmark, generate, judge, aggregate, report.

    python -m ray_jobs.evaluate --config ray_jobs/configs/evaluate_tiny.yaml   # see that header

Items are rows of a Ray Data dataset through two engine stages (dataset_builder.llm.stage):
the model under test's pool writes each missing response (`eval.stages.GenerateTask`, stored at
once under `<output>/generations/`), the judge's pool beside it judges each response as soon as
it is written (`JudgeTask`, through the judge cache). Both pools grow between
`engine.min_replicas..max_replicas` and `judge.min_replicas..max_replicas`. A rerun skips
stored generations and cached judgements. Nothing is dropped silently: malformed benchmark lines
become rejects, failed generations and judgements are recorded, and every score carries its
denominator.
"""
from __future__ import annotations

import json
import time

from dataset_builder.core import config, progress, storage
from dataset_builder.core.config import ConfigError, config_hash, under_least
from dataset_builder.core.records import todo
from dataset_builder.core.storage import save_resolved_config
from dataset_builder.core.text import count_words
from dataset_builder.llm.stage import engine_stage, engines_up
from eval import judge as J
from eval import scoring
from eval.config import EvalConfig
from eval.longbench_data import custom_items, load_benchmark
from eval.ruler import ruler_items, ruler_summary
from eval.stages import GenerateTask, JudgeTask, generation_hash, judge_schema, preflight, stores

PUBLISHED = {"temperature": 0.5, "judge_model": "gpt-4o-2024-05-13", "judge_temperature": 0.5,
             "max_new_tokens": 32768, "word_count_mode": "legacy"}


def code_version() -> str:
    """Hash of the evaluation and shared code (works without .git, e.g. under job submit)."""
    return config.code_version("eval", "dataset_builder")


def check_config(cfg: EvalConfig) -> None:
    """One clear ConfigError for settings that cannot run, before any engine starts."""
    problems = []
    if cfg.generate and not cfg.engine.model:
        problems.append("engine.model is required (the model under test)")
    if cfg.judge_enabled and not cfg.judge.model:
        problems.append("judge.model is required (or set judge_enabled=false)")
    problems += under_least(cfg, judge_samples=1, judge_max_attempts=1, max_new_tokens=1,
                            judge_max_tokens=1)
    for name in ("engine", "judge"):
        e = getattr(cfg, name)
        if e.min_replicas < 1 or e.max_replicas < e.min_replicas:  # in_flight: EngineConfig
            problems.append(f"{name}: need 1 <= min_replicas <= max_replicas"
                            f", got {e.min_replicas}, {e.max_replicas}")
    if min(cfg.limit, cfg.ruler_prompts, cfg.bootstrap_resamples, cfg.min_required_words) < 0:
        problems.append("limit, ruler_prompts, bootstrap_resamples and min_required_words "
                        "must be >= 0")
    if cfg.ruler and (not cfg.ruler_lengths or min(cfg.ruler_lengths) < 1):
        problems.append(f"ruler_lengths must be positive, got {cfg.ruler_lengths}")
    if problems:
        raise ConfigError("; ".join(problems))


def _rows(cfg: EvalConfig, work: list[tuple[str, dict]], gen_hash: str) -> tuple[list, dict]:
    """Dataset rows for (kind, item): a stored generation passes as "ok" (judged, not written
    again), a missing one is "todo" (or an error when generation is off)."""
    prior, stale = {}, 0
    for kind, store in stores(cfg).items():
        done, n = store.load(gen_hash)
        prior[kind], stale = done, stale + n
    rows = []
    for kind, item in work:
        item = {**item, "kind": kind}
        rec = prior[kind].get(item["id"])
        if rec is not None:
            rows.append({**todo({**rec, **item}), "status": "ok"})
        elif cfg.generate:
            rows.append(todo(item))
        else:
            rows.append({**todo({**item, "status": "error", "response": None, "error":
                                 "not_generated: generation disabled and no stored response"}),
                         "status": "error"})
    skipped = sum(r["status"] == "ok" for r in rows)
    return rows, {"skipped": skipped, "stale_generations": stale}


def _run_stages(cfg: EvalConfig, rows: list[dict], gen_hash: str) -> list[dict]:
    """The rows through the generation and judge pools; payloads back, in any order."""
    import ray

    n_todo = sum(r["status"] == "todo" for r in rows)
    gen, judge = cfg.engine if n_todo else None, cfg.judge if cfg.judge_enabled else None
    if gen is not None and gen.backend == "openai" and not gen.attach:
        preflight(gen, f"model under test {gen.model!r}", None)
    if judge is not None and judge.backend == "openai" and not judge.attach:
        preflight(judge, f"judge {judge.model!r}", judge_schema(cfg))
    if gen is None and judge is None:
        return [json.loads(r["payload"]) | {"status": r["status"]} for r in rows]
    line = progress_line(n_todo, len(rows) if judge is not None else 0)
    with engines_up(gen, judge) as up_key, progress.Console(
            "evaluate", cfg.progress, cfg.progress_interval_s, line) as con:
        ds = ray.data.from_items(rows)
        if gen is not None:
            ds = engine_stage(ds, gen, GenerateTask, {"cfg": cfg, "gen_hash": gen_hash}, up_key,
                              con.board, len(rows))
        if judge is not None:  # an API judge's rate is shared among its replicas
            rpm = cfg.judge_rpm / max(judge.max_replicas, 1)
            cache = cfg.judge_cache or storage.join(cfg.output.rstrip("/"), "judge_cache")
            ds = engine_stage(ds, judge, JudgeTask, {"cfg": cfg, "cache_uri": cache, "rpm": rpm},
                              up_key, con.board, len(rows))
        done = [json.loads(r["payload"]) | {"status": r["status"]} for r in ds.take_all()]
    written = sum(bool(d.get("generated")) and d["status"] == "ok" for d in done)
    con.final(f"responses {written}/{n_todo} written, "
              f"{sum(bool(d.get('generated')) and d['status'] != 'ok' for d in done)} failed")
    return done


def progress_line(n_todo: int, n_judge: int) -> progress.LineFn:
    """The evaluation's progress line; the ETA is the responses left at the rate so far
    (responses differ in length, so it is rough until many are done)."""
    def line(c: dict, g: dict, active_s: float) -> str:
        gen_ok, gen_bad = int(c.get("generate_ok", 0)), int(c.get("generate_error", 0) +
                                                              c.get("generate_reject", 0))
        tok_s = c.get("generate_output_tokens", 0) / active_s if active_s else 0.0
        text = (f"responses {gen_ok + gen_bad}/{n_todo} written, {gen_bad} failed | "
                f"{tok_s:,.0f} output tok/s")
        if n_judge:
            text += (f" | judged {int(c.get('judge_ok', 0) + c.get('judge_reject', 0))}/"
                     f"<={n_judge}")
        return text + f" | ETA {progress.eta(n_todo - gen_ok - gen_bad, gen_ok + gen_bad, active_s)}"
    return line


def _collect(cfg: EvalConfig, work: list[tuple[str, dict]], done: list[dict], counts: dict,
             seconds: float) -> dict:
    """samples, judgements and ruler records in input order, and the run's counters."""
    by_key = {(d["kind"], d["id"]): d for d in done}
    samples, judgements, ruler = [], [], []
    gen_tokens = judge_calls = generated = 0
    for kind, item in work:
        d = dict(by_key[(kind, item["id"])])
        if d["status"] == "reject":  # an exception in a stage's task
            reason = d.pop("reason")
            if d.pop("stage", None) == "judge":  # the response stands; its judging failed
                d["status"] = "ok"
                judgements += [{"id": d["id"], "replicate": r, "status": "failed",
                                "attempts": 0, "cached": False, "errors": [reason]}
                               for r in range(cfg.judge_samples)]
            else:
                d.update(status="error", response=None, error=reason)
        judgements += d.pop("judgements", [])
        judge_calls += d.pop("judge_calls", 0)
        if d.pop("generated", False) and d["status"] == "ok":
            generated += 1
            gen_tokens += d.get("output_tokens") or 0
        d.pop("kind")
        (samples if kind == "lbw" else ruler).append(d)
    stats = {"generated": generated, **counts, "judge_calls": judge_calls,
             "output_tokens_generated": gen_tokens, "seconds": round(seconds, 2)}
    return {"samples": samples, "judgements": judgements, "ruler": ruler, "stats": stats}


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
    if cfg.min_required_words:
        why.append(f"min_required_words={cfg.min_required_words}: not the full benchmark")
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


def _coverage(cfg: EvalConfig, rows: list[dict], judgements: list[dict], rejects: list[dict],
              meta: dict) -> dict:
    """Every denominator of the scores, and whether the run is complete: no failure hides."""
    n_items, n_gen = len(rows), sum(r["s_l"] is not None for r in rows)
    n_judged = sum(r["s_q"] is not None for r in rows)
    calls_ok = sum(j["status"] == "ok" for j in judgements)
    failures: dict[str, int] = {}
    for j in judgements:
        if j["status"] != "ok":
            reason = (j["errors"] or ["unknown"])[-1].split(":")[0].split(" (")[0]
            failures[reason] = failures.get(reason, 0) + 1
    return {
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


def _dimensions(rows: list[dict]) -> dict | None:
    """Per quality dimension over the judged responses: mean rating (1-5) and its 0-100 score."""
    judged = [r for r in rows if r["ratings"]]
    if not judged:
        return None
    return {d: {"mean_rating": sum(r["ratings"][d] for r in judged) / len(judged),
                "score": sum(scoring.dimension_score(r["ratings"][d]) for r in judged)
                / len(judged)} for d in scoring.DIMENSIONS}


def _protocol(cfg: EvalConfig, meta: dict) -> dict:
    """Everything that decides the numbers, so two results can be told comparable or not."""
    schema = judge_schema(cfg)
    return {
        "subset": cfg.subset, "limit": cfg.limit, **meta,
        "model": cfg.engine.model, "backend": cfg.engine.backend,
        "chat_template": "the model's own" if cfg.engine.backend == "vllm" else "the endpoint's",
        "decoding": {"temperature": cfg.temperature, "top_p": cfg.top_p,
                     "max_new_tokens": cfg.max_new_tokens,
                     "max_model_len": cfg.engine.max_model_len,
                     "seed": cfg.seed, "per_sample_seed": "sha256(seed:gen:id)"},
        "judge": {"enabled": cfg.judge_enabled, "model": cfg.judge.model,
                  "backend": cfg.judge.backend, "base_url": cfg.judge.base_url,
                  "temperature": cfg.judge_temperature, "max_tokens": cfg.judge_max_tokens,
                  "samples": cfg.judge_samples, "max_attempts": cfg.judge_max_attempts,
                  "constraint": "json_schema" if schema else "none",
                  "analysis_max_chars": cfg.judge_analysis_max_chars,
                  "schema_sha256": J.sha(json.dumps(schema, sort_keys=True)) if schema else None,
                  "prompt_version": J.PROMPT_VERSION,
                  "prompt_hash": J.PROMPT_HASH, "max_model_len": cfg.judge.max_model_len},
        "word_count_mode": cfg.word_count_mode,
        "scoring": "S_l, S_q, S as published (NOTICE); S_q over judged responses only",
        "bootstrap": {"resamples": cfg.bootstrap_resamples, "ci": 0.95, "method": "percentile",
                      "seed": cfg.seed},
        "code_version": code_version(), "config_hash": config_hash(cfg), "seed": cfg.seed,
        "generation_hash": generation_hash(cfg),
    }


def build_results(cfg: EvalConfig, rows: list[dict], judgements: list[dict], rejects: list[dict],
                  meta: dict, ruler_recs: list[dict], stats: dict) -> dict:
    """results.json: S, S_l and S_q overall and per bucket, language and type (with bootstrap
    CIs), the quality dimensions, coverage, comparability with the paper, and the protocol."""
    n_boot, seed = cfg.bootstrap_resamples, cfg.seed
    not_comparable = comparability(cfg, len(rejects))
    if meta["data_file"] == "custom items":
        not_comparable.insert(0, "custom items, not LongBench-Write")
    return {
        "benchmark": "LongBench-Write",
        "overall": scoring.summarize(rows, n_boot, seed),
        "by_bucket": scoring.group_summaries(rows, "bucket", n_boot, seed,
                                             [b[0] for b in scoring.BUCKETS]),
        "by_lang": scoring.group_summaries(rows, "lang", n_boot, seed, ["en", "zh"]),
        "by_type": scoring.group_summaries(rows, "type", n_boot, seed),
        "dimensions": _dimensions(rows),
        "coverage": _coverage(cfg, rows, judgements, rejects, meta),
        "published_comparable": not not_comparable,
        "not_comparable_because": not_comparable,
        "protocol": _protocol(cfg, meta),
        "ruler": ruler_summary(ruler_recs, cfg.word_count_mode) if ruler_recs else None,
        "run": stats,
    }


def work_items(cfg: EvalConfig, items: list[dict] | None = None
               ) -> tuple[list[tuple[str, dict]], list[dict], dict]:
    """(kind, item) for every prompt the run answers ("lbw" benchmark items, then "ruler"),
    the benchmark lines rejected, and the benchmark's metadata."""
    items, rejects, meta = load_benchmark(cfg.data_dir, cfg.subset, cfg.storage) \
        if items is None else custom_items(items)
    items = [i for i in items if i["required_length"] >= cfg.min_required_words]
    if cfg.limit:
        items = items[:cfg.limit]
    ruler = ruler_items(cfg.ruler_lengths, cfg.ruler_prompts, cfg.ruler_languages,
                        cfg.ruler_set) if cfg.ruler else []
    return [("lbw", i) for i in items] + [("ruler", i) for i in ruler], rejects, meta


def run_eval(cfg: EvalConfig, items: list[dict] | None = None) -> dict:
    """The whole evaluation on the connected Ray cluster. Engines: `engine` and `judge` pools
    (vllm, an OpenAI-compatible endpoint, or `attach` = a running EngineActor by name).
    `items`: score these (`custom_items`) instead of the benchmark. Returns results.json's
    content."""
    from eval.report import write_report

    check_config(cfg)
    progress.check_interval(cfg.progress_interval_s)
    work, rejects, meta = work_items(cfg, items)
    ruler = [i for kind, i in work if kind == "ruler"]
    gen_hash, t0 = generation_hash(cfg), time.monotonic()
    rows, counts = _rows(cfg, work, gen_hash)
    raw = _collect(cfg, work, _run_stages(cfg, rows, gen_hash), counts, time.monotonic() - t0)
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


