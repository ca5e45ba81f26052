"""Evaluation's engine-stage tasks: generation by the model under test, judging by the judge.

Each is a task of `dataset_builder.llm.stage` (one row = one call of `run`, in a replica of its
engine pool): `GenerateTask` writes one benchmark (or ruler) item and stores it at once, so a
rerun skips it; `JudgeTask` judges one response `judge_samples` times through the judge cache.
Failures are records, never raises: a failed generation is a sample with an error, a failed
judgement a judgement with its errors.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time

from dataset_builder.core import storage
from dataset_builder.core.text import count_words
from dataset_builder.llm import make_engine
from dataset_builder.llm.base import EngineError, Sampling
from eval import judge as J
from eval.config import EvalConfig

STORES = {"lbw": "generations", "ruler": "ruler_generations"}  # item kind -> store under output


def generation_hash(cfg: EvalConfig) -> str:
    """What makes a stored response reusable: same model, decoding and seed."""
    e = cfg.engine
    blob = json.dumps([e.backend, e.model, e.base_url, e.max_model_len, cfg.temperature,
                       cfg.top_p, cfg.max_new_tokens, cfg.seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class GenerationStore:
    """One JSON document per finished generation, keyed by item id: reused on rerun if its
    generation hash matches (a changed model or decoding regenerates instead)."""

    def __init__(self, uri: str, storage_cfg=None):
        self.store = storage.JsonStore(uri, storage_cfg)

    def load(self, gen_hash: str) -> tuple[dict[str, dict], int]:
        """({id: record} reusable, number stale or damaged)."""
        docs, damaged = self.store.items()
        done = {r["id"]: r for r in docs.values()
                if r.get("generation_hash") == gen_hash and r.get("status") == "ok"}
        return done, damaged + len(docs) - len(done)

    def save(self, rec: dict) -> None:
        self.store.put(rec["id"], rec)


def stores(cfg: EvalConfig) -> dict[str, GenerationStore]:
    out = cfg.output.rstrip("/")
    return {k: GenerationStore(storage.join(out, d), cfg.storage) for k, d in STORES.items()}


async def generate_one(chat: J.ChatFn, item: dict, cfg: EvalConfig, gen_hash: str) -> dict:
    """One benchmark item through the model under test; failures are records, not raises."""
    seed = J.derive_seed(cfg.seed, "gen", item["id"])
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p,
                        max_tokens=cfg.max_new_tokens, seed=seed, kind="answer", row=item["id"])
    base = {**item, "model": cfg.engine.label(), "seed": seed, "generation_hash": gen_hash,
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


class GenerateTask:
    """One item through the model under test, stored as soon as it is written."""
    stage = "generate"
    accepts = ("todo",)
    engine_key = "engine"

    def __init__(self, cfg: EvalConfig, gen_hash: str):
        self.cfg, self.gen_hash, self.stores = cfg, gen_hash, stores(cfg)

    async def run(self, engine, item: dict) -> dict:
        rec = await generate_one(engine.chat, item, self.cfg, self.gen_hash)
        if rec["status"] == "ok":
            self.stores[item["kind"]].save(rec)
        return {**rec, "generated": True}


def judge_schema(cfg: EvalConfig) -> dict | None:
    """The judge's answer schema, or None for a free-text (validated, retried) judge."""
    constraint = cfg.judge_constraint
    if constraint == "auto":
        constraint = "json_schema" if cfg.judge.backend == "vllm" else "none"
    return J.judge_schema(cfg.judge_analysis_max_chars) if constraint == "json_schema" else None


def judge_tokenizer(cfg: EvalConfig):
    name = cfg.judge_tokenizer or (cfg.judge.model if cfg.judge.backend == "vllm" else "")
    if not name:
        return None
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(name)


class JudgeTask:
    """Every replicate of one response, in one judge replica: replicate 0 first and the rest
    after it, so they share its whole prompt through that judge's prefix cache (vLLM, or the
    OpenAI API's prompt caching) instead of prefilling it again. Ruler rows pass through."""
    stage = "judge"
    accepts = ("ok",)            # generated (or stored) responses; failed ones are not judged
    engine_key = "judge_engine"  # keeps `engine`, where the response was generated

    def __init__(self, cfg: EvalConfig, cache_uri: str, rpm: float):
        self.cfg, self.schema = cfg, judge_schema(cfg)
        self.tokenizer = judge_tokenizer(cfg)
        self.cache, self.limiter = J.JudgeCache(cache_uri, cfg.storage), J.RateLimiter(rpm)

    async def run(self, engine, item: dict) -> dict:
        if item["kind"] != "lbw":
            return {"status": "ok"}
        cfg, calls = self.cfg, [0]

        async def chat(messages, sampling):
            calls[0] += 1
            return await engine.chat(messages, sampling)

        def replicate(r: int):
            return J.judge_one(chat, instruction=item["prompt"],
                               response=item.get("response") or "", judge_model=cfg.judge.model,
                               replicate=r, seed=cfg.seed, temperature=cfg.judge_temperature,
                               max_tokens=cfg.judge_max_tokens,
                               max_model_len=cfg.judge.max_model_len,
                               max_attempts=cfg.judge_max_attempts, schema=self.schema,
                               tokenizer=self.tokenizer, cache=self.cache, limiter=self.limiter,
                               item_id=item["id"])

        first = await replicate(0)
        rest = await asyncio.gather(*(replicate(r) for r in range(1, cfg.judge_samples)))
        return {"status": "ok", "judgements": [first, *rest], "judge_calls": calls[0]}


def preflight(engine_cfg, what: str, schema: dict | None) -> None:
    """One tiny request to an OpenAI-compatible endpoint, from the driver, so an unreachable
    endpoint or one without structured outputs fails the job before hours of work. (A vllm
    engine that cannot load its model already fails the job when its pool starts.)"""
    try:
        asyncio.run(make_engine(engine_cfg).chat(
            [{"role": "user", "content": "Reply with OK."}],
            Sampling(temperature=0.0, max_tokens=1, json_schema=schema)))
    except Exception as e:  # noqa: BLE001 -- any failure here ends the job with one line
        hint = " (no structured outputs? set judge_constraint=none)" if schema else ""
        raise EngineError(f"{what} is not answering: {J._error_line(e)}{hint}") from None
