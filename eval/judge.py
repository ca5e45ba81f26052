"""The S_q judge: bounded retries around the judge calls, and a result cache.

What the judge is asked and how its answer is read (the prompt, the answer's JSON schema,
parsing and validation, fitting a response into the judge's context) lives in judge_prompt.py:
pure functions, re-exported here (`J.judge_schema`, `J.parse_judgement`, `J.fit_response`,
`J.PROMPT_HASH`, ...). Here: `judge_one`, one judgement under a JSON-schema constraint where
the backend supports it (vLLM in-process and `vllm serve`; OpenAI structured outputs from
gpt-4o-2024-08-06 on, not the published gpt-4o-2024-05-13). Whatever comes back is still
validated: prose, partial JSON, out-of-range ratings or an empty answer are retried up to
`max_attempts` times with a fresh seed, then recorded as a failure with every reason;
`combine_replicates` averages a response's replicates; `RateLimiter` spaces the calls.

A judgement is cached under the hash of (judge model, prompt version, judged message, replicate,
decoding), so re-running an evaluation costs no judge calls. Everything here except the cache
I/O is pure; the caller supplies `chat(messages, sampling) -> Completion` (a Ray actor call,
an in-process engine, or a fake in tests).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

from dataset_builder.core import storage
from dataset_builder.llm.base import Completion, Sampling
from eval.judge_prompt import (  # noqa: F401 - re-exported: callers use J.judge_schema etc.
    JUDGE_SCHEMA,
    JUDGE_TEMPLATE,
    PROMPT_HASH,
    PROMPT_VERSION,
    TRUNCATION_NOTE,
    Fitted,
    fit_response,
    judge_messages,
    judge_prompt,
    judge_schema,
    parse_answer,
    parse_judgement,
    validate_ratings,
)
from eval.scoring import DIMENSIONS, quality_score

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- cache

def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(judge_model: str, messages: list[dict], replicate: int, sampling: Sampling) -> str:
    blob = json.dumps({"model": judge_model, "prompt": PROMPT_HASH,
                       "message": sha(json.dumps(messages, ensure_ascii=False)),
                       "replicate": replicate, "temperature": sampling.temperature,
                       "top_p": sampling.top_p, "max_tokens": sampling.max_tokens,
                       "seed": sampling.seed,
                       "schema": sha(json.dumps(sampling.json_schema, sort_keys=True))
                       if sampling.json_schema is not None else None},
                      sort_keys=True)
    return sha(blob)


class JudgeCache:
    """One JSON document per successful judgement under `uri` (any fsspec URI); "" disables
    it. A damaged entry reads as a miss: it is judged again, not trusted."""

    def __init__(self, uri: str, storage_cfg=None):
        self.store = storage.JsonStore(uri, storage_cfg, fanout=True) if uri else None

    def get(self, key: str) -> dict | None:
        return self.store.get(key) if self.store else None

    def put(self, key: str, record: dict) -> None:
        if self.store:
            self.store.put(key, record)


# --------------------------------------------------------------------------- judging

ChatFn = Callable[[list[dict], Sampling], Awaitable[Completion]]


class RateLimiter:
    """At most `per_minute` acquisitions per rolling minute, spaced evenly (0 = unlimited)."""

    def __init__(self, per_minute: float = 0.0):
        self.interval = 60.0 / per_minute if per_minute and per_minute > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


def derive_seed(*parts) -> int:
    """A request seed from the run seed and the item's identity: independent of scheduling."""
    return int(sha(":".join(str(p) for p in parts))[:8], 16) % (2 ** 31)


def _error_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    # Ray wraps remote exceptions; their last line carries the original type and message.
    return f"engine_error: {type(e).__name__}: {(msg[-1] if msg else '')[:300]}"


async def _ask_until_valid(chat: ChatFn, messages: list[dict], first: Sampling,
                           reseed: Callable[[int], int], max_attempts: int,
                           limiter: RateLimiter | None) -> tuple[dict | None, list[str], list[str]]:
    """Judge calls, a fresh seed each, until one parses: (its fields or None, errors, raws)."""
    errors, raws = [], []
    for attempt in range(max_attempts):
        sampling = first if attempt == 0 else Sampling(
            **{**first.__dict__, "seed": reseed(attempt)})
        if limiter:
            await limiter.acquire()
        try:
            c = await chat(messages, sampling)
        except Exception as e:  # noqa: BLE001 -- any engine/endpoint/actor failure is one failed attempt
            errors.append(_error_line(e))
            continue
        ratings, analysis, err = parse_answer(c.text)
        if ratings is not None:
            return {"ratings": ratings, "s_q": quality_score(ratings), "analysis": analysis,
                    "attempts": attempt + 1, "errors": errors, "raw": c.text,
                    "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
                    "output_tokens": c.output_tokens, "seed": sampling.seed}, errors, raws
        errors.append(f"{err} (finish_reason={c.finish_reason})")
        raws.append(c.text[:1000])
    return None, errors, raws


async def judge_one(chat: ChatFn, *, instruction: str, response: str, judge_model: str,
                    replicate: int, seed: int, temperature: float, max_tokens: int,
                    max_model_len: int, max_attempts: int = 3, schema: dict | None = JUDGE_SCHEMA,
                    tokenizer=None, cache: JudgeCache | None = None,
                    limiter: RateLimiter | None = None, item_id: str = "") -> dict:
    """One (response, replicate) judgement: cached, or up to `max_attempts` judge calls.

    Returns a record with status "ok" (ratings, s_q) or "failed" (every attempt's reason);
    never raises for a bad judge answer or a failed call.
    """
    fitted = fit_response(instruction, response, max_model_len, max_tokens, tokenizer)
    base = {"id": item_id, "replicate": replicate, "judge_model": judge_model,
            "prompt_hash": PROMPT_HASH, "response_sha256": sha(response)}
    if fitted is None:
        return {**base, "status": "failed", "attempts": 0, "cached": False,
                "errors": ["prompt_too_long: the instruction alone exceeds the judge context"]}
    base.update(truncated=fitted.truncated, truncation_unit=fitted.unit,
                judged_length=fitted.kept, response_length_units=fitted.total)
    messages = judge_messages(instruction, fitted.text, fitted.truncated)
    first = Sampling(temperature=temperature, top_p=1.0, max_tokens=max_tokens,
                     seed=derive_seed(seed, item_id, replicate, 0),
                     json_schema=schema, kind="judge", row=item_id, step=replicate)
    key = cache_key(judge_model, messages, replicate, first)
    hit = cache.get(key) if cache else None
    if hit and hit.get("status") == "ok":
        return {**hit, **{k: base[k] for k in ("id", "replicate")}, "cached": True}
    answer, errors, raws = await _ask_until_valid(
        chat, messages, first, lambda attempt: derive_seed(seed, item_id, replicate, attempt),
        max_attempts, limiter)
    if answer is not None:
        rec = {**base, "status": "ok", **answer, "cache_key": key}
        if cache:
            cache.put(key, rec)
        return {**rec, "cached": False}
    log.warning("judge failed on %s replicate %d after %d attempts: %s", item_id, replicate,
                max_attempts, errors[-1] if errors else "-")
    return {**base, "status": "failed", "attempts": max_attempts, "errors": errors,
            "raw_outputs": raws, "cached": False, "cache_key": key}


def combine_replicates(records: list[dict]) -> dict:
    """Per response: S_q = mean over successful replicates, its std, and the failure count."""
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        return {"s_q": None, "s_q_std": None, "judge_ok": 0, "judge_failed": len(records),
                "ratings": None}
    vals = [r["s_q"] for r in ok]
    mean = sum(vals) / len(vals)
    std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    ratings = {d: sum(float(r["ratings"][d]) for r in ok) / len(ok) for d in DIMENSIONS}
    return {"s_q": mean, "s_q_std": std, "judge_ok": len(ok),
            "judge_failed": len(records) - len(ok), "ratings": ratings}
