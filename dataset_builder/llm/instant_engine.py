"""The instant backend (`engine.backend: instant`): no model, answers made at once.

It rehearses a cluster run: with the model's cost gone, what is left is the orchestration (Ray
Data's scheduling, the driver, the journal, the sink, storage), which `benchmarks/scale.py`
measures at 10k-1M instructions. A request says what it is (`Sampling.kind`, `budget`, `row`,
`step`), so nothing here parses a prompt:

    plan      `paragraphs` lines in the paper's plan format whose budgets add up to `budget`
    write     a paragraph of exactly `budget` words
    estimate  a word count, as the length-estimate request's regex asks
    judge     (or any request with a JSON schema) an object of that schema
    answer    an evaluation answer of about max_tokens / tokens_per_word words

Everything is a function of (row, step, budget): a rerun writes the same bytes. A share of rows
(`duplicate_share`, by a hash of the row id) are planted near-duplicates: their plans and
paragraphs come from one of `duplicate_groups` texts per required length, with one word of the
first paragraph changed, so curation's dedup has real work. The text is windows of one fixed stream of
common English words (made once per process), so a paragraph costs a list slice and a join
(at most 4,096 words).
Outputs are marked: jobs record the model as `instant:<model>` (EngineConfig.label).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import random

from dataset_builder.llm.base import (
    Completion,
    EngineConfig,
    EngineError,
    InstantConfig,
    Sampling,
    counted,
)

_WORDS = (
    "the people city river garden history science music market school family morning "
    "evening light water stone road village winter summer story letter friend teacher "
    "doctor engine bridge harbor forest mountain island kitchen window library museum "
    "festival journey season language number question answer reason method system idea "
    "problem result change growth trade travel weather field animal plant flower tree "
    "bird ocean coast valley north south east west small large early late quiet bright "
    "careful simple strong gentle ancient modern local public private careful patient "
    "builds carries follows opens shows keeps brings finds makes gives takes leaves "
    "remembers describes explains protects changes grows moves reaches turns holds "
    "between through across under over beside around after before during without within "
    "often rarely slowly quickly nearly always never together again still already").split()
_STREAM_WORDS = 1 << 22
_stream: list[str] | None = None


def _words() -> list[str]:
    """One fixed stream of sentences (8-18 words, capitalized, ending in a period)."""
    global _stream
    if _stream is None:
        rng, out = random.Random(20240807), []
        while len(out) < _STREAM_WORDS:
            n = rng.randint(8, 18)
            s = rng.choices(_WORDS, k=n)
            out += [s[0].capitalize(), *s[1:-1], s[-1] + "."]
        _stream = out[:_STREAM_WORDS]
    return _stream


def _h(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(),
                                          digest_size=8).digest(), "big")


def text(key: str, words: int, tweak: int | None = None, slot: int = 0) -> str:
    """`words` words of the stream from a position set by (`key`, `slot`); `tweak` changes
    one word. Each slot (a row's step) starts anywhere: rows never share all their paragraphs'
    positions, and two paragraphs of one row overlap rarely (a 4M-word stream)."""
    stream = _words()
    words = max(1, min(words, 4096))
    start = _h(key, slot) % (len(stream) - words)
    out = stream[start:start + words]
    if tweak is not None:
        out = list(out)
        out[tweak % words] = "variant"
    s = " ".join(out)
    return s if s.endswith(".") else s + "."


class InstantEngine:
    """llm.base.Engine without a model."""
    batch = None   # no batch counters

    def __init__(self, cfg: EngineConfig):
        self.cfg: InstantConfig = cfg.instant
        if not 0 <= self.cfg.duplicate_share <= 1 or self.cfg.paragraphs < 1 \
                or self.cfg.duplicate_groups < 1:
            raise EngineError("engine.instant: duplicate_share in [0, 1], paragraphs and "
                              "duplicate_groups >= 1")
        self.stats = {"requests": 0, "prompt_tokens": 0, "output_tokens": 0}

    def planted(self, row: str) -> int | None:
        """The duplicate group of a planted row, else None."""
        h = _h("planted", row)
        if (h % 1_000_000) / 1_000_000 < self.cfg.duplicate_share:
            return (h >> 20) % self.cfg.duplicate_groups
        return None

    def _key(self, s: Sampling) -> tuple[str, int | None]:
        """Where a row's text comes from: its own id, or its planted group's text (same
        for every row of the group with the same budget), tweaked by the row."""
        g = self.planted(s.row)
        if g is None:
            return s.row, None
        # one word of the first paragraph differs: near, never exact, copies
        return f"dup:{g}", (_h("tweak", s.row) if s.step <= 1 else None)

    def plan(self, s: Sampling) -> str:
        total, n = s.budget or 2000, self.cfg.paragraphs
        key, _ = self._key(s)
        base = [total // n + (1 if i < total % n else 0) for i in range(n)]
        lines = []
        for i, words in enumerate(base, start=1):
            point = text(f"{key}:point:{total}:{i}", 6).replace(".", "")
            lines.append(f"Paragraph {i} - Main Point: {point} - Word Count: {words} words")
        return "\n".join(lines) + "\n"

    def answer(self, s: Sampling) -> str:
        if s.json_schema is not None:
            return json.dumps(_from_schema(s.json_schema, _h(s.row, s.step)))
        if s.kind == "plan":
            return self.plan(s)
        if s.kind == "estimate":
            return str(s.budget or 2000 + 500 * (_h("estimate", s.row) % 9))
        key, tweak = self._key(s)
        if s.kind == "write":
            return text(key, s.budget or 100, tweak, slot=s.step)
        words = s.budget or int(s.max_tokens / self.cfg.tokens_per_word)
        return text(f"{key}:{s.kind}", words, tweak, slot=s.step)

    async def chat(self, messages: list[dict], sampling: Sampling) -> Completion:
        if sampling.prompt_logprobs:
            raise EngineError("prompt_logprobs: the instant backend has no model to score with")
        if self.cfg.latency_s > 0:
            await asyncio.sleep(self.cfg.latency_s)
        out = self.answer(sampling)
        c = Completion(text=out, finish_reason="stop",
                       prompt_tokens=sum(len(str(m.get("content", ""))) for m in messages) // 4,
                       output_tokens=round(len(out.split()) * self.cfg.tokens_per_word))
        return counted(self.stats, c)

    def metrics(self) -> dict:
        return dict(self.stats)


def _from_schema(schema: dict, h: int):
    """A value of a JSON schema (the subset the project's schemas use), chosen by `h`."""
    if "enum" in schema:
        return schema["enum"][h % len(schema["enum"])]
    t = schema.get("type")
    if t == "object":
        return {k: _from_schema(v, _h(h, k)) for k, v in schema.get("properties", {}).items()}
    if t == "array":
        return [_from_schema(schema.get("items", {}), h)]
    if t == "integer":
        return int(schema.get("minimum", 1))
    if t == "number":
        return float(schema.get("minimum", 0))
    if t == "boolean":
        return bool(h & 1)
    return "Instant judgement: a stand-in answer made without a model."
