"""The generation job's dry run: what a run will cost, before any engine starts.

    python -m ray_jobs.generate --config ray_jobs/configs/generate_demo.yaml --dry-run \
        --set estimate.price_output_per_m=10.0 ...

Reads the input and applies every selection rule that needs no engine (rows with no stated
length are counted, not estimated: they are priced at the median of the stated lengths), skips
the rows an earlier run finished, then models each instruction as the job will run it:
- the plan has P paragraphs: required words / `estimate.paragraph_words`, within the
  configured `max_paragraphs` and so that every budget fits the paragraph word bounds;
- a write step of w words emits min(w x tokens per word, its max_tokens), where max_tokens
  is the job's own ceiling (agentwrite.tokens_per_word x step_slack, capped at
  max_step_tokens); tokens per word are measured per language with the model's tokenizer on
  the input's own instructions, or given (`estimate.tokens_per_word`, for an API model);
- input tokens come from the real prompt builders rendered once per plan size with
  placeholder text (so the template, the plan and the text so far are the job's own), shifted
  per row by its instruction's and its steps' lengths; with prefix caching a request reuses
  its longest common prefix with the one before it (and every request the template head
  shared by all rows), rounded down to whole KV blocks (an API: 128-token steps from 1,024).
Not counted: the length-estimate requests, plan retries and steps redone after errors.
Starts no engine and no Ray, checks no API key, calls no API.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from dataclasses import field as dc_field

from dataset_builder import prompts, selection
from dataset_builder.core import instructions as ins
from dataset_builder.core.config import ConfigError, field
from dataset_builder.core.text import count_words
from dataset_builder.llm.render import ChatRenderer

# Output tokens per word for an engine whose tokenizer is not at hand (an API model): about
# what GPT-4o's tokenizer gives for English prose and for Chinese (a "word" is a character).
DEFAULT_TOKENS_PER_WORD = {"en": 1.35, "zh": 1.0}
PLACEHOLDER = " lorem"   # one token in most BPE vocabularies; counted, not assumed


@dataclass
class EstimateConfig:
    paragraph_words: int = field(400, help="Dry run: the assumed words per planned paragraph; "
        "a plan for W words has about W / this paragraphs (within agentwrite's paragraph "
        "count and word bounds). The count used is printed.")
    main_point_words: int = field(20, help="Dry run: assumed words of a plan line's main point "
        "(the plan's output tokens and its size in every write prompt).")
    tokens_per_word: dict = field(default_factory=dict, help="Dry run: output tokens per word "
        "by language, e.g. {en: 1.3, zh: 1.0}. A language not given is measured with the "
        "engine model's tokenizer on the input's instructions (vllm backend), else taken from "
        f"{DEFAULT_TOKENS_PER_WORD} (an API model).")
    gpu_output_tokens_per_s: float = field(2500.0, help="Dry run: output tokens/s of one GPU "
        "engine on this job, for GPU-hours. 2,500 is an assumption for a 7B model on an H100 "
        "with vLLM (not measured here; datatrove reports 7,900 for a 4B model): set yours.")
    price_input_per_m: float | None = field(None, help="Dry run: USD per million input "
        "tokens not served from the cache (None: not priced).")
    price_cached_input_per_m: float | None = field(None, help="Dry run: USD per million "
        "cached input tokens (None: the input price).")
    price_output_per_m: float | None = field(None, help="Dry run: USD per million output "
        "tokens (None: not priced).")

    def __post_init__(self):
        for name in ("paragraph_words", "main_point_words", "gpu_output_tokens_per_s",
                     "price_input_per_m", "price_cached_input_per_m", "price_output_per_m"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError(f"estimate.{name} must be > 0, got {v}")
        bad = {k: v for k, v in self.tokens_per_word.items()
               if not isinstance(v, (int, float)) or not v > 0}
        if bad:
            raise ConfigError(f"estimate.tokens_per_word must be positive numbers, got {bad}")


def paragraphs(required: int, aw, est: EstimateConfig) -> int:
    """The paragraph count assumed for a plan of `required` words."""
    lo = max(aw.min_paragraphs, math.ceil(required / aw.max_paragraph_words))
    hi = min(aw.max_paragraphs, max(1, required // aw.min_paragraph_words))
    p = min(max(math.ceil(required / est.paragraph_words), lo), hi)
    return min(max(p, aw.min_paragraphs), aw.max_paragraphs)


class Counter:
    """Tokens of chat messages and texts: the model's tokenizer and chat template, or, with
    none (an API model), words x a ratio over the messages' text (`units` then are words)."""

    def __init__(self, tokenizer=None, ratio: float = 1.0):
        self.render = ChatRenderer(tokenizer) if tokenizer is not None else None
        self.scale = 1.0 if tokenizer is not None else ratio

    def units(self, messages: list[dict]) -> list:
        if self.render is not None:
            return self.render(messages)
        return " ".join(f"{m['role']}: {m['content']}" for m in messages).split()

    def text(self, s: str) -> int:
        return len(self.render.tokenize(s)) if self.render is not None else len(s.split())


def _lcp(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class Shape:
    """The requests of one plan size as linear functions of a row's instruction and paragraph
    lengths (units of the counter), measured on placeholder renders: request r (0 = the plan,
    k = write step k) has `prompt[r] + (I - I_ref) + texts[r] * (o - x_ref)` units, and shares
    `prefix[r] + inst_in_prefix[r] * (I - I_ref) + ptexts[r] * (o - x_ref)` with the request
    before it (I: the row's instruction, o: its paragraph, in units)."""
    plan_line: float
    prompt: list[float] = dc_field(default_factory=list)
    texts: list[float] = dc_field(default_factory=list)
    prefix: list[float] = dc_field(default_factory=list)
    ptexts: list[float] = dc_field(default_factory=list)
    inst_in_prefix: list[int] = dc_field(default_factory=list)
    head: int = 0       # units every row's write steps share (the template before the instruction)
    head_plan: int = 0  # ... and every row's plan request


def _placeholder(n: int) -> str:
    return (PLACEHOLDER * n).strip()


def _render(p: int, aw, est: EstimateConfig, counter: Counter, ref: str, x: int) -> list:
    """Units of the plan request and of write steps 1..p for instruction `ref`, placeholder
    main points, and paragraphs of `x` placeholder words."""
    plan = [{"main_point": _placeholder(est.main_point_words), "words": 100}] * p
    plan_msgs = prompts.plan_messages(ref, 1000, aw.min_paragraph_words, aw.max_paragraph_words)
    plan_text = prompts.format_plan(plan)
    reqs, texts = [counter.units(plan_msgs)], []
    for _k in range(p):
        reqs.append(counter.units(prompts.write_messages(ref, plan, texts, aw.layout, plan_msgs,
                                                         plan_text)))
        texts.append(_placeholder(x))
    return reqs


REF_A = "Write an essay about the history of the lighthouse."
REF_B = "Write a long report on rivers, their floods, and the towns built beside them."
X_A, X_B = 8, 24


def shape(p: int, aw, est: EstimateConfig, counter: Counter) -> Shape:
    a = _render(p, aw, est, counter, REF_A, X_A)
    b = _render(p, aw, est, counter, REF_A, X_B)
    c = _render(1, aw, est, counter, REF_B, X_A)
    dx = counter.text(_placeholder(X_B)) - counter.text(_placeholder(X_A))
    head = _lcp(a[1], c[1])
    plan_text = prompts.format_plan([{"main_point": _placeholder(est.main_point_words),
                                      "words": 100}] * p)
    s = Shape(plan_line=counter.text(plan_text + "\n") / p, head=head,
              head_plan=_lcp(a[0], c[0]))
    for r in range(p + 1):
        s.prompt.append(len(a[r]))
        s.texts.append((len(b[r]) - len(a[r])) / dx)
        if r == 0:
            s.prefix.append(0), s.ptexts.append(0), s.inst_in_prefix.append(0)
            continue
        pa, pb = _lcp(a[r - 1], a[r]), _lcp(b[r - 1], b[r])
        s.prefix.append(pa)
        s.ptexts.append((pb - pa) / dx)
        s.inst_in_prefix.append(int(pa > head))
    return s


def _cached(prefix: float, scale: float, block: int, api: bool) -> float:
    """Tokens a request gets from the prefix cache: whole KV blocks of its common prefix; an
    API (OpenAI's rule) caches in 128-token steps from 1,024 tokens on."""
    t = prefix * scale
    if api:
        return 0.0 if t < 1024 else math.floor(t / 128) * 128
    return math.floor(t / block) * block


def row_tokens(required: int, inst_units: int, tpw: float, aw, est: EstimateConfig,
               s: Shape, counter: Counter, inst_ref: int, block: int, api: bool) -> dict:
    """One instruction's expected tokens: output, input, input served from the cache."""
    p = len(s.prompt) - 1
    words = required / p
    cap = min(aw.max_step_tokens, math.ceil(words * aw.tokens_per_word * aw.step_slack) + 16)
    o = min(words * tpw, cap)                  # a write step's output tokens
    o_u = o / counter.scale                    # ... in the counter's units
    x_u = counter.text(_placeholder(X_A))
    d_i = inst_units - inst_ref
    out = p * s.plan_line * counter.scale + p * o
    prompt = cached = 0.0
    for r in range(p + 1):
        prompt += (s.prompt[r] + d_i + s.texts[r] * (o_u - x_u)) * counter.scale
        pre = s.head_plan if r == 0 else max(s.head, s.prefix[r] + s.inst_in_prefix[r] * d_i
                                        + s.ptexts[r] * (o_u - x_u))
        cached += _cached(pre, counter.scale, block, api)
    return {"paragraphs": p, "output": out, "input": prompt, "cached": cached,
            "step_tokens": o, "step_max_tokens": cap}


def _rows(cfg) -> tuple[list[dict], dict]:
    """The input as the job's driver sees it (id, file, line, language, length, prompt), and
    the input lines rejected by reason."""
    import json
    rows, bad = [], {}
    for f in ins.input_files(cfg.input, cfg.storage):
        for r in ins.parse_file({"file": f}, cfg.storage):
            item = json.loads(r["payload"])
            if r["status"] != "todo":
                key = f"input: {item['reason'].split(':')[0]}"
                bad[key] = bad.get(key, 0) + 1
            rows.append({k: item.get(k) for k in ("id", "file", "line", "lang", "prompt",
                                                  "required_words", "required_words_source")}
                        | {"status": r["status"]})
    return rows, bad


def _tokens_per_word(todo: list[dict], counter: Counter, est: EstimateConfig) -> dict:
    """Per language: the given ratio, else measured on the instructions with the model's
    tokenizer, else the default for an API model."""
    out = {}
    for lang in sorted({r["lang"] for r in todo}):
        if lang in est.tokens_per_word:
            out[lang] = (float(est.tokens_per_word[lang]), "given")
        elif counter.render is not None:
            texts = [r["prompt"] for r in todo if r["lang"] == lang]
            words = sum(count_words(t) for t in texts)
            toks = sum(counter.text(t) for t in texts)
            out[lang] = (toks / max(words, 1), "measured on the instructions")
        else:
            out[lang] = (DEFAULT_TOKENS_PER_WORD.get(lang, 1.35), "default")
    return out


def _counter(cfg) -> Counter:
    if cfg.engine.backend == "vllm":
        from transformers import AutoTokenizer
        return Counter(AutoTokenizer.from_pretrained(cfg.engine.model))
    en = cfg.estimate.tokens_per_word.get("en", DEFAULT_TOKENS_PER_WORD["en"])
    return Counter(None, float(en))


def estimate(cfg, done: set, recorded: set) -> dict:
    """The dry run's numbers for a GenerateConfig (see the module's docstring); `done`,
    `recorded`: generation.earlier's ids finished by earlier runs and rejects recorded."""
    est, aw, sel = cfg.estimate, cfg.agentwrite, cfg.selection
    rows, rejects = _rows(cfg)
    decisions = selection.decide(rows, done, recorded, sel, cfg.limit)
    for d in decisions.values():
        if isinstance(d, tuple):
            key = f"{d[0]}: {d[1].split(':')[0]}"
            rejects[key] = rejects.get(key, 0) + 1
    todo = [r for r in rows if decisions[(r["file"], r["line"])] == "todo"]
    known = [r["required_words"] for r in todo if r.get("required_words")]
    fill = int(statistics.median(known)) if known else max(sel.min_required_words, 1)
    counter = _counter(cfg)
    tpw = _tokens_per_word(todo, counter, est)
    api = cfg.engine.backend != "vllm"
    block = cfg.engine.block_size or (16 if cfg.engine.num_gpus > 0 else 128)
    inst_ref = counter.text(REF_A)
    shapes: dict[int, Shape] = {}
    tot = {"output": 0.0, "input": 0.0, "cached": 0.0}
    paragraph_counts: dict[int, int] = {}
    for r in todo:
        req = r.get("required_words") or fill
        p = paragraphs(req, aw, est)
        if p not in shapes:
            shapes[p] = shape(p, aw, est, counter)
        t = row_tokens(req, counter.text(r["prompt"]), tpw[r["lang"]][0], aw, est, shapes[p],
                       counter, inst_ref, block, api)
        for k in tot:
            tot[k] += t[k]
        paragraph_counts[p] = paragraph_counts.get(p, 0) + 1
    return _result(cfg, rows, done, decisions, todo, known, fill, tpw, tot, paragraph_counts,
                   rejects, api, block)


def _result(cfg, rows, done, decisions, todo, known, fill, tpw, tot, pcounts, rejects, api,
            block) -> dict:
    est = cfg.estimate
    out, inp, cached = (round(tot[k]) for k in ("output", "input", "cached"))
    res = {
        "instructions_in": len(rows), "already_done": sum(d == "skip" for d in
                                                          decisions.values()),
        "selected": len(todo) + sum(d == "later" for d in decisions.values()),
        "to_generate": len(todo), "beyond_limit": sum(d == "later" for d in decisions.values()),
        "rejects_by_reason": rejects,
        "length_unknown": len(todo) - len(known), "length_unknown_priced_at_words": fill,
        "required_words": sum(r.get("required_words") or fill for r in todo),
        "paragraphs_assumed": {str(k): v for k, v in sorted(pcounts.items())},
        "tokens_per_word": {k: {"value": round(v, 3), "source": s} for k, (v, s) in tpw.items()},
        "output_tokens": out, "input_tokens": inp, "input_tokens_cached": cached,
        "input_tokens_uncached_with_prefix_cache": inp - cached,
        "cache": "api (128-token steps from 1,024)" if api else f"vllm blocks of {block}",
        "gpu_hours": round(out / est.gpu_output_tokens_per_s / 3600, 3),
        "gpu_output_tokens_per_s": est.gpu_output_tokens_per_s,
        "model": cfg.engine.model, "layout": cfg.agentwrite.layout,
    }
    if est.price_input_per_m and est.price_output_per_m:
        p_in, p_out = est.price_input_per_m, est.price_output_per_m
        p_cached = est.price_cached_input_per_m or p_in
        res["usd_without_cache"] = round((inp * p_in + out * p_out) / 1e6, 2)
        res["usd_with_cache"] = round(((inp - cached) * p_in + cached * p_cached
                                       + out * p_out) / 1e6, 2)
        res["prices_per_m"] = {"input": p_in, "cached_input": p_cached, "output": p_out}
    return res


def lines(res: dict) -> list[str]:
    """The human-readable lines (the JSON object follows them)."""
    tpw = ", ".join(f"{k} {v['value']} ({v['source']})" for k, v in res["tokens_per_word"].items())
    out = [
        f"dry run: {res['instructions_in']} instructions in, {res['already_done']} done by "
        f"earlier runs, {res['selected']} selected, {res['to_generate']} to generate"
        + (f" ({res['beyond_limit']} beyond limit, not priced)" if res["beyond_limit"] else ""),
        "rejects: " + (", ".join(f"{k} {v}" for k, v in sorted(res["rejects_by_reason"].items()))
                       or "none"),
        f"required words: {res['required_words']:,} ({res['length_unknown']} rows with no "
        f"stated length priced at the median, {res['length_unknown_priced_at_words']:,}; "
        "their LLM estimate is not called)",
        f"plans assumed: paragraphs -> rows {res['paragraphs_assumed']}; tokens per word: {tpw}",
        f"output tokens: {res['output_tokens']:,} (plans and write steps)",
        f"input tokens: {res['input_tokens']:,} uncached; with prefix caching "
        f"{res['input_tokens_cached']:,} from the cache ({res['cache']}), "
        f"{res['input_tokens_uncached_with_prefix_cache']:,} to prefill",
        f"GPU-hours: {res['gpu_hours']:,} at {res['gpu_output_tokens_per_s']:,.0f} output "
        "tokens/s per GPU engine (estimate.gpu_output_tokens_per_s)",
    ]
    if "usd_with_cache" in res:
        p = res["prices_per_m"]
        out.append(f"API cost: USD {res['usd_with_cache']:,.2f} with prompt caching, "
                   f"{res['usd_without_cache']:,.2f} without (per million: input {p['input']}, "
                   f"cached {p['cached_input']}, output {p['output']})")
    return out
