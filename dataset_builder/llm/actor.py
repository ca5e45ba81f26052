"""EngineActor: one long-lived engine per Ray actor, shared by every stage that needs an LLM.

The actor is async, so many coroutines (whole AgentWrite instructions, judge calls, single
chats) run in it at once and the engine's batch stays full. Resources are declared here, where
the actor is defined: `num_gpus` per engine on GPU clusters, CPUs on this machine.
"""
from __future__ import annotations

import os
import socket

import ray

from dataset_builder.llm import make_engine
from dataset_builder.llm.base import EngineConfig, Sampling


class EngineActor:
    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.engine = make_engine(cfg)

    def info(self) -> dict:
        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "host": socket.gethostname(), "model": self.cfg.model}

    async def chat(self, messages: list[dict], sampling: Sampling):
        return await self.engine.chat(messages, sampling)

    async def chat_many(self, batch: list[list[dict]], sampling: Sampling):
        import asyncio
        return await asyncio.gather(*(self.engine.chat(m, sampling) for m in batch))

    def metrics(self) -> dict:
        return {**self.engine.metrics(), "node_id": ray.get_runtime_context().get_node_id()}

    async def reset_prefix_cache(self) -> None:
        await self.engine.reset_prefix_cache()


def start_engines(cfg: EngineConfig, n: int = 1, max_restarts: int = 3, **options) -> list:
    """Start `n` EngineActors and wait until each engine is up (fails fast on a bad model).

    SPREAD places replicas on different nodes where resources allow, so one lost node takes
    down as few engines as possible.
    """
    options.setdefault("scheduling_strategy", "SPREAD")
    # max_task_retries=0: calls in flight when the actor dies fail back to the caller
    # (RemoteEngine resends them once the actor is back). An async actor runs up to 1,000
    # calls at once by default, far above an engine's batch.
    remote = ray.remote(EngineActor).options(
        num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_restarts=max_restarts,
        max_task_retries=0, **options)
    actors = [remote.remote(cfg) for _ in range(n)]
    ray.get([a.info.remote() for a in actors])
    return actors
