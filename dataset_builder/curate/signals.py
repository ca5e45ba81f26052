"""Model-based quality signals of curated rows, scored through the engine stage (opt-in).

    signals:
      enabled: true
      engine: {model: <a local model>, ...}   # the reference model (vllm backend)
      min_relevance: 0.0                      # optional filters, off until set
      max_perplexity: 200

Per row, two scoring requests to the reference model (max_tokens 1, prompt log-probabilities):
its response after its own instruction, and after an empty user message, both in the model's
chat template and on the same first `max_response_tokens` tokens of the response.
- perplexity = exp(-mean log p(response | instruction)): broken or shuffled text scores high;
  repetition scores LOW (a looping answer is the "best" text of all), so it is only ever an
  upper threshold and the repetition filters stay.
- relevance = mean log p(response | instruction) - mean log p(response | empty user message):
  how much the instruction helps predict the answer; fluent text about something else (the
  demo's gardening request answered with an essay on narrative voice) scores below zero.
Rows already dropped are not scored. A row that cannot be scored (empty response, an engine
error) keeps null signals with the reason in `signal_error` and passes the thresholds.
"""
from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from dataset_builder.core.config import ConfigError, check_least, field
from dataset_builder.core.records import ROW
from dataset_builder.llm.base import EngineConfig, EngineError, Sampling

COLUMNS = [("perplexity", pa.float64()), ("relevance", pa.float64()),
           ("signal_tokens", pa.int64()), ("signal_error", pa.string())]


@dataclass
class SignalsConfig:
    enabled: bool = field(False, help="score every row that passed the filters and dedup "
        "with the reference model (engine): perplexity and relevance, stored as columns of "
        "the curated rows and the rejects and shown in the report. Costs engine time (two "
        "scoring passes a row; docs/BENCHMARKS.md has the rate).")
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(
        max_model_len=4096, num_cpus=1.0, in_flight=16, max_num_seqs=16), help="the reference "
        "model's engine (vllm backend: prompt log-probabilities); at paper scale a model with "
        "a context long enough for max_response_tokens")
    max_response_tokens: int = field(1024, help="score the first N tokens of each response "
        "(recorded per row in signal_tokens); the instruction and template must fit beside "
        "them in engine.max_model_len")
    min_relevance: float | None = field(None, help="drop rows whose relevance is below this "
        "(reason low_relevance). Off until set: choose it from the report's relevance "
        "histogram and its lowest-relevance rows (0 = the instruction does not help at all)")
    max_perplexity: float | None = field(None, help="drop rows whose perplexity is above this "
        "(reason high_perplexity). Off until set: choose it from the report's highest-"
        "perplexity rows. Never a lower bound: repetition has the lowest perplexity")

    def __post_init__(self):
        if self.enabled and self.engine.backend != "vllm":
            raise ConfigError(f"signals.engine.backend must be vllm (prompt log-probabilities),"
                              f" got {self.engine.backend!r}")
        check_least(self, "signals.", max_response_tokens=1)


def mean_logprob(logprobs: list[float | None]) -> float | None:
    vals = [x for x in logprobs if x is not None]
    return sum(vals) / len(vals) if vals else None


def signals(cond: float, uncond: float) -> dict:
    """From the mean log-probabilities of the response with and without its instruction."""
    return {"perplexity": math.exp(-cond), "relevance": cond - uncond}


def keep(perplexity: float | None, relevance: float | None, cfg: SignalsConfig
         ) -> tuple[bool, str | None]:
    """(keep, reason) of the signal filters; unscored rows (None) pass."""
    if cfg.min_relevance is not None and relevance is not None and relevance < cfg.min_relevance:
        return False, f"low_relevance: {relevance:.4f} < {cfg.min_relevance}"
    if cfg.max_perplexity is not None and perplexity is not None and \
            perplexity > cfg.max_perplexity:
        return False, f"high_perplexity: {perplexity:.1f} > {cfg.max_perplexity}"
    return True, None


class SignalTask:
    """One row in a reference-model replica: the two scoring requests of the module's doc.
    The response's token ids ride on the assistant turn (render.py splices them), so its
    log-probabilities are exactly the prompt's last len(ids) positions."""
    stage = "signals"
    accepts = ("todo",)
    engine_key = "signals_engine"

    def __init__(self, cfg: SignalsConfig):
        from transformers import AutoTokenizer
        self.cfg = cfg
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.engine.model)

    async def _mean(self, engine, user: str, text: str, ids: list[int]) -> float | None:
        c = await engine.chat([{"role": "user", "content": user},
                               {"role": "assistant", "content": text, "token_ids": ids}],
                              Sampling(temperature=0.0, max_tokens=1, prompt_logprobs=True))
        return mean_logprob(c.prompt_logprobs[-len(ids):])

    async def run(self, engine, item: dict) -> dict:
        ids = self.tokenizer(item.get("response") or "", add_special_tokens=False)[
            "input_ids"][:self.cfg.max_response_tokens]
        if not ids:
            return {"status": "ok", "signal_error": "empty_response"}
        text = self.tokenizer.decode(ids)
        try:
            cond, uncond = await asyncio.gather(self._mean(engine, item["prompt"], text, ids),
                                                self._mean(engine, "", text, ids))
        except EngineError as e:
            return {"status": "ok", "signal_error": f"engine_error: {str(e)[:200]}"}
        if cond is None or uncond is None:
            return {"status": "ok", "signal_error": "no_logprobs"}
        return {"status": "ok", "signal_tokens": len(ids), **signals(cond, uncond)}


def to_rows(batch: pa.Table) -> pa.Table:
    """Alive work rows -> engine-stage rows carrying what scoring needs."""
    batch = batch.filter(pc.is_null(batch["stage"]))
    return pa.Table.from_pylist(
        [{"id": k, "status": "todo", "payload": json.dumps({"row_key": k, "prompt": p,
                                                              "response": r}, ensure_ascii=False)}
         for k, p, r in zip(batch["row_key"].to_pylist(), batch["prompt"].to_pylist(),
                            batch["response"].to_pylist())], schema=ROW)


def scores_only(batch: pa.Table) -> pa.Table:
    """The scored rows without their text (only the signals travel to the driver)."""
    out = []
    for rk, payload in zip(batch["id"].to_pylist(), batch["payload"].to_pylist()):
        d = json.loads(payload)
        if d.get("stage") == "signals":          # an exception in the task: its reason
            d["signal_error"] = d.get("reason")
        out.append({"row_key": rk, **{n: d.get(n) for n, _ in COLUMNS}})
    return pa.Table.from_pylist(out, schema=pa.schema([("row_key", pa.string()), *COLUMNS]))


def mark(batch: pa.Table, scores: dict, cfg: SignalsConfig) -> pa.Table:
    """Set the signal columns; rows the thresholds drop get stage 'signals' and the reason."""
    rows = batch.to_pylist()
    for r in rows:
        s = scores.get(r["row_key"])
        if s is None:
            continue
        r.update(s)
        ok, reason = keep(s["perplexity"], s["relevance"], cfg)
        if not ok:
            r["stage"], r["reason"] = "signals", reason
            r["detail"] = json.dumps({"perplexity": s["perplexity"],
                                      "relevance": s["relevance"]})
    return pa.Table.from_pylist(rows, schema=batch.schema)
