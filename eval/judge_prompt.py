"""The S_q judge's prompt and answer format: pure functions, no calls.

The judge prompt is written for this project around the six published dimensions; the judge
first writes a brief analysis, then rates, in one JSON object {"Analysis": ..., six 1..5
ratings} whose JSON schema is `judge_schema()`. `PROMPT_HASH` covers the prompt version, the
template, the truncation note and the schema, so changing any of them invalidates cached
judgements. Here: building the judge's messages, parsing and validating its answer (prose,
fenced or partial JSON, out-of-range ratings, each with a reason), and cutting a response
deterministically so that prompt + answer fit the judge's context (`fit_response`).
The calls, retries and the cache are in judge.py.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass

from eval.scoring import DIMENSIONS

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
