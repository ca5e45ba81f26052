"""AgentWrite: plan a long answer as paragraphs with word budgets, then write them in order.

One instruction is one coroutine (`run_instruction`) inside an engine actor: plan under a regex
constraint in the paper's format, validate, then write step 1..N, each conditioned on the
instruction, the plan and the text so far. Every finished step is journaled to the object
store before the next starts, so a restarted actor (or a rerun) resumes mid-document.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Literal

from dataset_builder import prompts
from dataset_builder.core import progress, storage
from dataset_builder.core.config import field
from dataset_builder.core.text import count_words, refusal
from dataset_builder.llm.base import EngineError, Sampling, text_only


@dataclass
class AgentWriteConfig:
    layout: Literal["paper", "append"] = field("paper", help="Write-step prompt layout: paper "
        "(one user turn: instruction, plan, text so far, step) or append (the plan conversation "
        "goes on, one short user turn per paragraph; higher prefix-cache reuse).")
    min_paragraphs: int = field(1, help="Fewest paragraphs a plan may have.")
    max_paragraphs: int = field(50, help="Most paragraphs a plan may have (the paper: <= 50).")
    min_paragraph_words: int = field(100, help="Smallest word budget per paragraph.")
    max_paragraph_words: int = field(1500, help="Largest word budget per paragraph.")
    max_main_point_chars: int = field(300, help="Longest main point in characters (the plan "
        "regex bounds it so every plan terminates).")
    min_main_point_words: int = field(2, help="A main point needs this many words of letters "
        "(CJK: twice as many characters) and mostly letters, so junk plans ('Worl C C 0111 "
        "1111111') are retried, not written. 0 disables (random-weight test models).")
    total_tolerance: float = field(0.3, help="Plan total must be within this fraction of "
        "required_words (when known).")
    rescale_plan: bool = field(False, help="If a plan's total is off, scale its budgets to "
        "required_words (clamped to the paragraph bounds) instead of re-planning. Small models "
        "rarely add up; the record keeps plan_attempts either way.")
    plan_retries: int = field(3, help="Plan attempts before the instruction is rejected.")
    step_retries: int = field(2, help="Extra attempts per write step on empty/refused output or "
        "engine errors.")
    tokens_per_word: float = field(1.6, help="Token budget per planned word (max_tokens of a "
        "step = words x this x step_slack).")
    step_slack: float = field(1.5, help="Headroom over the planned length before a step is cut.")
    max_step_tokens: int = field(4096, help="Cap on one step's max_tokens.")
    force_lengths: bool = field(False, help="Benchmarks: each step emits exactly words x "
        "tokens_per_word tokens (min_tokens = max_tokens, ignore_eos).")
    temperature: float = field(0.8, help="Sampling temperature for plan and write steps.")
    top_p: float = field(0.95, help="Nucleus sampling for plan and write steps.")
    repetition_penalty: float = field(1.0, help="Write steps: vLLM's repetition penalty (>1 "
        "discourages tokens already in the prompt or output; 1 = off). Small models loop "
        "without it.")
    frequency_penalty: float = field(0.0, help="Write steps: OpenAI-style frequency penalty "
        "(subtracts this x the token's count in the output so far; 0 = off).")
    presence_penalty: float = field(0.0, help="Write steps: OpenAI-style presence penalty "
        "(0 = off).")
    seed: int = field(0, help="Base seed; each request's seed derives from (id, step, attempt).")


def plan_regex(cfg: AgentWriteConfig) -> str:
    """Paper format, numbered 1..N in order, min..max lines: nested optional tails."""
    def line(i: int) -> str:
        return (f"Paragraph {i} - Main Point: [^\\n]{{5,{cfg.max_main_point_chars}}}"
                f" - Word Count: [1-9][0-9]{{1,4}} words\\n")
    tail = ""
    for i in range(cfg.max_paragraphs, cfg.min_paragraphs, -1):
        tail = f"({line(i)}{tail})?"
    return "".join(line(i) for i in range(1, cfg.min_paragraphs + 1)) + tail


def plan_max_tokens(cfg: AgentWriteConfig) -> int:
    return cfg.max_paragraphs * (cfg.max_main_point_chars + 24) + 16


_PLAN_LINE = re.compile(r"^Paragraph (\d+) - Main Point: (.+) - Word Count: (\d+) words?\s*$")


def parse_plan(text: str) -> list[dict]:
    plan = []
    for raw in text.strip().splitlines():
        m = _PLAN_LINE.match(raw.strip())
        if m:
            plan.append({"main_point": m.group(2).strip(), "words": int(m.group(3))})
    return plan


_WORD = re.compile(r"[^\W\d_]{2,}")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def is_text(s: str, min_words: int) -> bool:
    """At least `min_words` words of 2+ letters (or 2 x as many CJK characters), and letters
    are most of the non-space characters."""
    if min_words <= 0:
        return True
    chars = [c for c in s if not c.isspace()]
    letters = sum(c.isalpha() for c in chars)
    enough = len(_WORD.findall(s)) >= min_words or len(_CJK.findall(s)) >= 2 * min_words
    return enough and letters >= 0.5 * max(len(chars), 1)


def validate_plan(plan: list[dict], required: int | None, cfg: AgentWriteConfig
                  ) -> tuple[list[dict] | None, str | None]:
    """(plan, None) if usable (possibly rescaled), else (None, reason). The total is checked on
    the budgets that will be written, after any rescaling or clamping."""
    if not (cfg.min_paragraphs <= len(plan) <= cfg.max_paragraphs):
        return None, f"plan_paragraphs_out_of_range: {len(plan)}"
    junk = [p["main_point"] for p in plan if not is_text(p["main_point"],
                                                        cfg.min_main_point_words)]
    if junk:
        return None, f"plan_main_point_not_text: {junk[0][:60]!r}"
    lo, hi = cfg.min_paragraph_words, cfg.max_paragraph_words
    total = sum(p["words"] for p in plan)

    def off(t: int) -> bool:
        return bool(required) and abs(t - required) > cfg.total_tolerance * required
    if off(total) and not cfg.rescale_plan:
        return None, f"plan_total_off: {total} vs required {required}"
    if cfg.rescale_plan:
        scale = required / max(total, 1) if off(total) else 1.0
        plan = [{**p, "words": min(hi, max(lo, round(p["words"] * scale)))} for p in plan]
        if off(sum(p["words"] for p in plan)):  # clamping can undo the scaling
            return None, (f"plan_total_off_after_rescale: {sum(p['words'] for p in plan)} vs "
                          f"required {required}")
    bad = [p["words"] for p in plan if not lo <= p["words"] <= hi]
    if bad:
        return None, f"plan_paragraph_budget_out_of_bounds: {bad[0]} not in [{lo}, {hi}]"
    return plan, None


def step_sampling(words: int, cfg: AgentWriteConfig, seed: int, row: str = "", step: int = 0
                  ) -> Sampling:
    tag = {"kind": "write", "budget": words, "row": row, "step": step}
    if cfg.force_lengths:
        n = max(1, min(cfg.max_step_tokens, math.ceil(words * cfg.tokens_per_word)))
        return Sampling(cfg.temperature, cfg.top_p, max_tokens=n, min_tokens=n, ignore_eos=True,
                        seed=seed, **tag)
    n = min(cfg.max_step_tokens, math.ceil(words * cfg.tokens_per_word * cfg.step_slack) + 16)
    # Penalties apply to write steps only: the plan decodes under a regex whose fixed parts
    # ("Paragraph 2 - Main Point:") must repeat.
    return Sampling(cfg.temperature, cfg.top_p, max_tokens=n, seed=seed,
                    repetition_penalty=cfg.repetition_penalty,
                    frequency_penalty=cfg.frequency_penalty,
                    presence_penalty=cfg.presence_penalty, **tag)


def _seed(cfg: AgentWriteConfig, iid: str, step: int, attempt: int) -> int:
    h = hashlib.sha256(f"{cfg.seed}:{iid}:{step}:{attempt}".encode()).hexdigest()
    return int(h[:8], 16)


def prompt_hash(messages: list[dict]) -> str:
    """Hash of the request's text. A turn's `token_ids` are left out: they only decide which
    cached KV the engine can reuse, and a journal entry that lacks them is still the same step."""
    return hashlib.sha256(json.dumps(text_only(messages), ensure_ascii=False).encode()
                          ).hexdigest()[:16]


class Journal:
    """One instruction's resume state, one object `<journal_uri>/<ab>/<id>.json` (256 folders
    by id): its finished steps (0 = plan) and its attempt count in this run, rewritten after
    each step. One object per instruction, not per step: a million instructions would leave
    ten million step files (this machine has 16 million inodes), and a resume would LIST and
    GET each; a rewrite is one PUT either way, and a resume reads one object. A damaged
    object reads as empty: its steps are generated again."""

    def __init__(self, journal_uri: str, iid: str, storage_cfg=None):
        self.store, self.iid = storage.JsonStore(journal_uri, storage_cfg, fanout=True), iid
        self.doc: dict | None = None

    def _doc(self) -> dict:
        if self.doc is None:   # read once: this object is the only writer of its instruction
            self.doc = self.store.get(self.iid) or {}
            self.doc.setdefault("steps", {})
        return self.doc

    def load(self) -> dict[int, dict]:
        return {int(k): v for k, v in self._doc()["steps"].items()}

    def save(self, step: int, entry: dict) -> None:
        self._doc()["steps"][str(step)] = entry
        self.store.put(self.iid, self.doc)

    def start_attempt(self, run_id: str) -> int:
        """Count one more attempt of this instruction in run `run_id` (1 = the first). Ray
        reruns a row lost with its actor without limit, so the count lives here, with the
        steps; a new run starts again at 1."""
        old = self._doc().get("attempts") or {}
        n = old.get("n", 0) + 1 if old.get("run") == run_id else 1
        self.doc["attempts"] = {"run": run_id, "n": n}
        self.store.put(self.iid, self.doc)
        return n


class Rejected(Exception):
    """The instruction cannot be completed; `reason` goes to _rejects/."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage, self.reason = stage, reason


def plan_messages(inst: dict, cfg: AgentWriteConfig) -> list[dict]:
    return prompts.plan_messages(inst["prompt"], inst.get("required_words"),
                                 cfg.min_paragraph_words, cfg.max_paragraph_words)


def step_messages(inst: dict, plan_entry: dict, steps: list[dict], cfg: AgentWriteConfig
                  ) -> list[dict]:
    """The write request for step len(steps) + 1 in the configured layout, from the journal
    entries of the plan and of the steps written so far. The append layout replays the plan's
    raw text and, where the engine returned them, the ids it generated for each earlier turn,
    so the whole conversation so far is reused from the prefix cache."""
    msgs = prompts.write_messages(inst["prompt"], plan_entry["plan"], [s["text"] for s in steps],
                                  cfg.layout, plan_messages(inst, cfg), plan_entry.get("text"))
    if cfg.layout == "append":
        turns = [m for m in msgs if m["role"] == "assistant"]  # plan, paragraph 1, 2, ...
        for m, entry in zip(turns, [plan_entry, *steps]):
            if entry.get("token_ids"):
                m["token_ids"] = entry["token_ids"]
    return msgs


async def _plan(engine, inst: dict, cfg: AgentWriteConfig) -> tuple[list[dict], dict]:
    req = inst.get("required_words")
    msgs = plan_messages(inst, cfg)
    reasons = []
    for attempt in range(cfg.plan_retries):
        s = Sampling(cfg.temperature, cfg.top_p, max_tokens=plan_max_tokens(cfg),
                     seed=_seed(cfg, inst["id"], 0, attempt), regex=plan_regex(cfg),
                     kind="plan", budget=req, row=inst["id"])
        try:
            c = await engine.chat(msgs, s)
        except EngineError as e:
            raise Rejected("plan", str(e)) from None  # context overflow etc.: retrying won't help
        plan, reason = validate_plan(parse_plan(c.text), req, cfg)
        if plan:
            return plan, {"attempts": attempt + 1, "prompt_hash": prompt_hash(msgs), "text": c.text,
                          "plan": plan, **_usage(c)}
        reasons.append(reason if c.finish_reason != "length" else "plan_cut_at_max_tokens")
    raise Rejected("plan", f"plan_failed_after_{cfg.plan_retries}_attempts: {reasons[-1]}")


def _usage(c) -> dict:
    u = {"prompt_tokens": c.prompt_tokens, "output_tokens": c.output_tokens,
         "cached_tokens": c.cached_tokens, "finish_reason": c.finish_reason}
    return {**u, "token_ids": c.token_ids} if c.token_ids is not None else u


async def _write_step(engine, inst, msgs: list[dict], k: int, words: int, cfg) -> dict:
    """Step k from its request `msgs` (built and hashed once by the caller)."""
    last = "empty_output"
    for attempt in range(cfg.step_retries + 1):
        s = step_sampling(words, cfg, _seed(cfg, inst["id"], k, attempt), inst["id"], k)
        try:
            c = await engine.chat(msgs, s)
        except EngineError as e:
            last = f"engine_error: {e}"
            if "prompt_too_long" in str(e):
                break
            continue
        text = c.text.strip()
        if not text:
            last = "empty_output"
        elif refusal(text) and not cfg.force_lengths:
            last = "refusal"
        else:
            return {"text": text, **_usage(c)}
    raise Rejected(f"write_step_{k}", last)


async def run_instruction(engine, inst: dict, cfg: AgentWriteConfig, journal_uri: str,
                          storage_cfg=None, journal: Journal | None = None) -> dict:
    """Plan + write one instruction. Returns {"status": "ok", "record": ...} or a reject.
    Counts for the job's progress (core.progress): the plan's steps and words, each step's
    words as written (or resumed from the journal), and the words a reject leaves unwritten.
    `journal`: the instruction's Journal when the caller has read it already."""
    journal = journal or Journal(journal_uri, inst["id"], storage_cfg)
    done = journal.load()
    plan: list[dict] = []
    steps: list[dict] = []
    try:
        if 0 in done:
            plan_entry, resumed = done[0], 1
        else:
            resumed = 0
            _, plan_entry = await _plan(engine, inst, cfg)
            journal.save(0, plan_entry)
        plan = plan_entry["plan"]
        progress.add(rows_planned=1, steps_planned=len(plan),
                     words_planned=sum(p["words"] for p in plan))
        steps = [plan_entry]
        for k in range(1, len(plan) + 1):
            entry = done.get(k)
            msgs = step_messages(inst, plan_entry, steps[1:], cfg)
            h = prompt_hash(msgs)
            words = plan[k - 1]["words"]
            if entry and entry["prompt_hash"] == h:
                resumed += 1
                progress.add(steps_resumed=1, words_resumed=words)
            else:  # not journaled, or journaled under another prompt (config changed): write it
                done = {}  # later journal entries depend on this step's text: drop them
                entry = {"prompt_hash": h, **await _write_step(engine, inst, msgs, k, words, cfg)}
                journal.save(k, entry)
                progress.add(steps_done=1, words_done=words)
            steps.append(entry)
    except Rejected as r:
        if plan:
            progress.add(words_dropped=sum(p["words"] for p in plan[max(len(steps) - 1, 0):]))
        else:
            progress.add(rows_dropped=1)
        return {"status": "reject", "id": inst["id"], "stage": r.stage, "reason": r.reason}
    return {"status": "ok", "record": _record(inst, plan_entry, steps, resumed, cfg)}


def _record(inst, plan_entry, steps, resumed, cfg) -> dict:
    paragraphs = [s["text"] for s in steps[1:]]
    response = "\n\n".join(paragraphs)
    return {
        **{k: inst.get(k) for k in ("id", "prompt", "source", "lang", "required_words",
                                    "required_words_source")},
        "plan": plan_entry["plan"], "paragraphs": paragraphs, "response": response,
        "response_words": count_words(response), "layout": cfg.layout,
        "plan_attempts": plan_entry.get("attempts", 1),
        "step_prompt_tokens": [s["prompt_tokens"] for s in steps],
        "step_output_tokens": [s["output_tokens"] for s in steps],
        "step_cached_tokens": [s["cached_tokens"] for s in steps],
        "finish_reasons": [s["finish_reason"] for s in steps],
        "resumed_steps": resumed,
    }
