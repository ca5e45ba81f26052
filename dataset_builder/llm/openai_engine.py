"""OpenAI-compatible chat-completions backend (GPT-4o, `vllm serve`, any compatible server).

Async with a concurrency limit; 429, 5xx, timeouts and connection errors are retried with
exponential backoff and jitter; other 4xx fail at once with the server's message. The API key is
read from the environment variable named in the config and never logged. httpx is used
directly (not the openai SDK) so retry policy and vLLM's extra fields stay in one place.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random

import httpx

from dataset_builder.llm.base import (
    Completion,
    EngineConfig,
    EngineError,
    Sampling,
    counted,
    text_only,
)

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIEngine:
    batch = None   # no batch counters (llm.base.Engine)

    def __init__(self, cfg: EngineConfig):
        if not cfg.base_url:
            raise EngineError("engine.base_url is required for the openai backend")
        self.cfg = cfg
        self._sem = asyncio.Semaphore(cfg.max_concurrency)
        key = os.environ.get(cfg.api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # httpx pools at most 100 connections by default, which would quietly cap
        # max_concurrency; size the pool to it.
        limits = httpx.Limits(max_connections=cfg.max_concurrency,
                              max_keepalive_connections=cfg.max_concurrency)
        self._client = httpx.AsyncClient(base_url=cfg.base_url.rstrip("/"), headers=headers,
                                         timeout=cfg.request_timeout_s, limits=limits)
        self.stats = {"requests": 0, "retries": 0, "prompt_tokens": 0, "output_tokens": 0}

    def _body(self, messages: list[dict], s: Sampling) -> dict:
        body = {"model": self.cfg.model, "messages": text_only(messages), "temperature": s.temperature,
                "top_p": s.top_p, "max_tokens": s.max_tokens}
        if s.seed is not None:
            body["seed"] = s.seed
        if s.frequency_penalty:
            body["frequency_penalty"] = s.frequency_penalty
        if s.presence_penalty:
            body["presence_penalty"] = s.presence_penalty
        if s.stop:
            body["stop"] = s.stop
        if s.json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": s.json_schema, "strict": True}}
        # vLLM's server extensions; other servers ignore unknown fields or reject them (4xx).
        if s.regex is not None:
            body["structured_outputs"] = {"regex": s.regex}
        if s.min_tokens:
            body["min_tokens"] = s.min_tokens
        if s.ignore_eos:
            body["ignore_eos"] = True
        if s.repetition_penalty != 1.0:
            body["repetition_penalty"] = s.repetition_penalty
        return body

    async def chat(self, messages: list[dict], sampling: Sampling) -> Completion:
        if sampling.prompt_logprobs:   # chat completions return no prompt log-probabilities
            raise EngineError("prompt_logprobs: the openai backend cannot return them (vllm only)")
        body = self._body(messages, sampling)
        delay = self.cfg.backoff_s
        async with self._sem:
            for attempt in range(self.cfg.max_retries + 1):
                last = attempt == self.cfg.max_retries
                try:
                    resp = await self._client.post("/chat/completions", json=body)
                except (httpx.TimeoutException, httpx.TransportError) as e:
                    if last:
                        raise EngineError(f"openai endpoint {self.cfg.base_url}: "
                                          f"{type(e).__name__} after {attempt + 1} tries") from None
                    why = type(e).__name__
                else:
                    if resp.status_code == 200:
                        return self._completion(resp.json())
                    if resp.status_code not in RETRY_STATUS or last:
                        raise EngineError(f"openai endpoint {self.cfg.base_url} answered "
                                          f"{resp.status_code}: {resp.text[:500]}")
                    why = f"HTTP {resp.status_code}"
                log.warning("openai endpoint %s: %s, retry %d of %d", self.cfg.base_url, why,
                            attempt + 1, self.cfg.max_retries)
                self.stats["retries"] += 1
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay *= 2
        raise AssertionError("unreachable")

    def _completion(self, data: dict) -> Completion:
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        c = Completion(text=choice["message"].get("content") or "",
                       finish_reason=choice.get("finish_reason") or "stop",
                       prompt_tokens=int(usage.get("prompt_tokens", 0)),
                       output_tokens=int(usage.get("completion_tokens", 0)),
                       cached_tokens=int((usage.get("prompt_tokens_details") or {})
                                         .get("cached_tokens", 0) or 0))
        return counted(self.stats, c)

    def metrics(self) -> dict:
        return dict(self.stats)

    async def aclose(self) -> None:
        await self._client.aclose()
