"""The S_q judge: prompt, JSON schema, parsing and validation, bounded retries, a result cache.

The judge prompt is written for this project around the six published dimensions. As in the
published protocol, the judge first writes a brief analysis, then rates: it answers one JSON
object {"Analysis": ..., six 1..5 ratings}, under a JSON-schema constraint where the backend
supports it (vLLM in-process and `vllm serve`; OpenAI structured outputs from
gpt-4o-2024-08-06 on, not the published gpt-4o-2024-05-13). Whatever comes back is still
validated: prose, partial JSON, out-of-range ratings or an empty answer are retried up to
`max_attempts` times with a fresh seed, then recorded as a failure with every reason.

A judgement is cached under the hash of (judge model, prompt version, judged message, replicate,
decoding), so re-running an evaluation costs no judge calls. Everything here except the cache
I/O is pure; the caller supplies `chat(messages, sampling) -> Completion` (a Ray actor call,
an in-process engine, or a fake in tests).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dataset_builder import storage
from dataset_builder.llm.base import Completion, Sampling
from eval.scoring import DIMENSIONS, quality_score

PROMPT_VERSION = "lbw-judge-v2"

# Every fixed line comes before the instruction and the response, so the judge server's prefix
# cache covers all of it and only the item's own text is prefilled per request.
JUDGE_TEMPLATE = """You are an expert editor reviewing long-form writing. Below are a USER INSTRUCTION and a RESPONSE written for it. Rate how well the response fulfils the instruction.

Rate each of these six dimensions with an integer from 1 (very poor) to 5 (excellent):
- Relevance: the response addresses the instruction's topic, purpose and every explicit requirement (length aside).
- Accuracy: facts, reasoning and terminology are correct, with no fabrication or self-contradiction.
- Coherence: the text is logically organized; each part follows from the previous one and the whole holds together.
- Clarity: the language is precise, fluent and easy to follow, in a fitting format, without needless repetition.
- Breadth and Depth: the subject is covered broadly enough and analysed deeply enough, with specific detail and insight.
- Reading Experience: the text is engaging and pleasant to read, in a style and tone that suit its readers.

Judge the content only. Length is scored separately: do not reward or punish length itself. An empty, off-topic or repetitive response gets low ratings. A response that ends with [CUT] was shortened to fit your context window: rate the part shown and do not penalize the cut.

Reply with one JSON object and nothing else: first "Analysis", a brief assessment of the response (at most three sentences), then the six ratings as integers from 1 to 5:
{"Analysis": "...", "Relevance": 1-5, "Accuracy": 1-5, "Coherence": 1-5, "Clarity": 1-5, "Breadth and Depth": 1-5, "Reading Experience": 1-5}

<instruction>
$INSTRUCTION$
</instruction>

<response>
$RESPONSE$$NOTE$
</response>"""

TRUNCATION_NOTE = "\n[CUT]"



def judge_schema(analysis_max_chars: int = 0) -> dict:
    """The answer's JSON schema: the analysis first (it is written before the ratings), then
    the six ratings. `analysis_max_chars` bounds the analysis for backends that support
    maxLength (vLLM's grammars); 0 leaves it out (OpenAI strict mode has no length keywords)."""
    analysis = {"type": "string"}
    if analysis_max_chars:
        analysis["maxLength"] = analysis_max_chars
    return {
        "type": "object",
        "properties": {"Analysis": analysis,
                       **{d: {"type": "integer", "enum": [1, 2, 3, 4, 5]} for d in DIMENSIONS}},
        "required": ["Analysis", *DIMENSIONS],
        "additionalProperties": False,
    }


JUDGE_SCHEMA = judge_schema()

PROMPT_HASH = hashlib.sha256(
    json.dumps([PROMPT_VERSION, JUDGE_TEMPLATE, TRUNCATION_NOTE, JUDGE_SCHEMA],
               sort_keys=True).encode()).hexdigest()[:16]

_PLACEHOLDER = re.compile(r"\$(INSTRUCTION|RESPONSE|NOTE)\$")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def judge_prompt(instruction: str, response: str, truncated: bool = False) -> str:
    """The judge's user message; one substitution pass, so a `$RESPONSE$` inside the
    instruction is never expanded."""
    values = {"INSTRUCTION": instruction, "RESPONSE": response,
              "NOTE": TRUNCATION_NOTE if truncated else ""}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], JUDGE_TEMPLATE)


def judge_messages(instruction: str, response: str, truncated: bool = False) -> list[dict]:
    return [{"role": "user", "content": judge_prompt(instruction, response, truncated)}]


# --------------------------------------------------------------------------- parse and validate

def _norm_key(key: str) -> str:
    return " ".join(re.split(r"[\s_\-]+", str(key).strip().lower()))


_DIM_BY_NORM = {_norm_key(d): d for d in DIMENSIONS}


def _json_candidates(text: str):
    """JSON objects in `text`: fenced blocks first, then every `{` position (raw_decode)."""
    decoder = json.JSONDecoder()
    sources = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for src in sources:
        for i, ch in enumerate(src):
            if ch == "{":
                try:
                    obj, _ = decoder.raw_decode(src, i)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    yield obj


def _rating(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def validate_ratings(obj: dict) -> tuple[dict | None, str | None]:
    """({dimension: rating}, None) when all six are present, numeric and in [1, 5]."""
    found = {}
    for k, v in obj.items():
        dim = _DIM_BY_NORM.get(_norm_key(k))
        if dim is not None and dim not in found:
            found[dim] = v
    missing = [d for d in DIMENSIONS if d not in found]
    if missing:
        return None, f"missing_dimensions: {', '.join(missing)}"
    ratings = {}
    for d in DIMENSIONS:
        r = _rating(found[d])
        if r is None:
            return None, f"not_a_number: {d}={found[d]!r}"
        if not 1 <= r <= 5:
            return None, f"out_of_range: {d}={found[d]!r}"
        ratings[d] = int(r) if r.is_integer() else r
    return ratings, None


def parse_answer(text: str | None) -> tuple[dict | None, str | None, str | None]:
    """(ratings, analysis, None) or (None, None, reason). Reasons: empty, no_json,
    malformed_json, not_an_object, missing_dimensions, not_a_number, out_of_range."""
    if text is None or not text.strip():
        return None, None, "empty"
    first_error = None
    for obj in _json_candidates(text):
        ratings, err = validate_ratings(obj)
        if ratings is not None:
            analysis = obj.get("Analysis")
            return ratings, analysis if isinstance(analysis, str) else None, None
        first_error = first_error or err
    if first_error:
        return None, None, first_error
    try:
        other = json.loads(text)
        return None, None, f"not_an_object: {type(other).__name__}"
    except json.JSONDecodeError:
        pass
    return None, None, "malformed_json" if "{" in text else "no_json"


def parse_judgement(text: str | None) -> tuple[dict | None, str | None]:
    """(ratings, None) or (None, reason); see parse_answer."""
    ratings, _, err = parse_answer(text)
    return ratings, err


# --------------------------------------------------------------------------- truncation

@dataclass
class Fitted:
    """The response as the judge sees it."""
    text: str
    truncated: bool
    unit: str           # "tokens" (the judge's tokenizer) or "chars" (no tokenizer: 1 char >= 1 token)
    kept: int
    total: int


def fit_response(instruction: str, response: str, max_model_len: int, max_tokens: int,
                 tokenizer=None, margin: int = 32) -> Fitted | None:
    """Cut `response` deterministically so prompt + answer fit the judge's context.

    With a tokenizer the budget is exact (chat template included); without one, characters
    stand in for tokens (a token spans at least one character for the tokenizers in use).
    None when even an empty response does not fit.
    """
    empty = judge_messages(instruction, "", truncated=True)
    if tokenizer is not None:
        try:
            rendered = tokenizer.apply_chat_template(empty, tokenize=False,
                                                     add_generation_prompt=True)
        except (ValueError, TypeError):  # no chat template: the message alone
            rendered = empty[0]["content"]
        overhead = len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
        ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        budget = max_model_len - overhead - max_tokens - margin
        if budget < 0:
            return None
        if len(ids) <= budget:
            return Fitted(response, False, "tokens", len(ids), len(ids))
        return Fitted(tokenizer.decode(ids[:budget]), True, "tokens", budget, len(ids))
    overhead = len(empty[0]["content"]) + margin
    budget = max_model_len - overhead - max_tokens - margin
    if budget < 0:
        return None
    if len(response) <= budget:
        return Fitted(response, False, "chars", len(response), len(response))
    return Fitted(response[:budget], True, "chars", budget, len(response))


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
    """One JSON file per successful judgement under `uri` (any fsspec URI); "" disables it."""

    def __init__(self, uri: str, storage_cfg=None):
        self.uri, self.storage_cfg = uri.rstrip("/"), storage_cfg

    def _path(self, key: str) -> str:
        return storage.join(self.uri, key[:2], f"{key}.json")

    def get(self, key: str) -> dict | None:
        if not self.uri:
            return None
        path = self._path(key)
        try:
            return storage.read_json(path, self.storage_cfg)
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # a damaged entry is re-judged, not trusted

    def put(self, key: str, record: dict) -> None:
        if self.uri:
            storage.write_json(self._path(key), record, self.storage_cfg)


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
                     json_schema=schema)
    key = cache_key(judge_model, messages, replicate, first)
    hit = cache.get(key) if cache else None
    if hit and hit.get("status") == "ok":
        return {**hit, **{k: base[k] for k in ("id", "replicate")}, "cached": True}
    errors, raws = [], []
    for attempt in range(max_attempts):
        sampling = first if attempt == 0 else Sampling(
            **{**first.__dict__, "seed": derive_seed(seed, item_id, replicate, attempt)})
        if limiter:
            await limiter.acquire()
        try:
            c = await chat(messages, sampling)
        except Exception as e:  # noqa: BLE001 -- any engine/endpoint/actor failure is one failed attempt
            errors.append(_error_line(e))
            continue
        ratings, analysis, err = parse_answer(c.text)
        if ratings is not None:
            rec = {**base, "status": "ok", "ratings": ratings, "s_q": quality_score(ratings),
                   "analysis": analysis,
                   "attempts": attempt + 1, "errors": errors, "raw": c.text,
                   "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
                   "output_tokens": c.output_tokens, "seed": sampling.seed, "cache_key": key}
            if cache:
                cache.put(key, rec)
            return {**rec, "cached": False}
        errors.append(f"{err} (finish_reason={c.finish_reason})")
        raws.append(c.text[:1000])
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
