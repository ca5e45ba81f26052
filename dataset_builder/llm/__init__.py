"""LLM engine layer: one async interface (`chat(messages, sampling) -> Completion`), three backends.

- `vllm`:   AsyncLLM in-process (vllm_engine.py), hosted in a Ray actor (actor.py).
- `openai`: any OpenAI-compatible endpoint (openai_engine.py): GPT-4o, `vllm serve`, ...
- `instant`: no model, answers at once (instant_engine.py): rehearses the orchestration at scale.
- `attach`:  a running EngineActor by name (RemoteEngine below).

Jobs run engines as rows of the engine stage (stage.py); actor.py hosts a long-lived engine.
"""
from dataset_builder.llm.base import Completion, EngineConfig, EngineError, Sampling  # noqa: F401
from dataset_builder.llm.instant_engine import InstantEngine
from dataset_builder.llm.openai_engine import OpenAIEngine
from dataset_builder.llm.vllm_engine import VLLMEngine


def make_engine(cfg):
    """The backend named by `cfg.backend`, in this process; `cfg.attach` names a running
    EngineActor to use instead (its chat calls go over Ray)."""
    if cfg.attach:
        return RemoteEngine(cfg.attach)
    if cfg.backend == "openai":
        return OpenAIEngine(cfg)
    if cfg.backend == "instant":
        return InstantEngine(cfg)
    return VLLMEngine(cfg)


class RemoteEngine:
    """A running EngineActor by name: many jobs share one long-lived engine (and a test
    session starts one engine, not one per job)."""

    batch = None   # no batch counters (llm.base.Engine)

    def __init__(self, name: str):
        import ray
        self.actor = ray.get_actor(name)

    async def chat(self, messages, sampling, retries: int = 60):
        """Resends a request lost while the actor restarts (about 2 minutes at most)."""
        import asyncio

        from ray.exceptions import ActorUnavailableError, RayActorError
        for attempt in range(retries + 1):
            try:
                return await self.actor.chat.remote(messages, sampling)
            except (ActorUnavailableError, RayActorError) as e:
                if attempt == retries:
                    raise
                import logging
                logging.getLogger(__name__).warning(
                    "engine actor unavailable (%s): resending in 2 s (%d of %d)",
                    type(e).__name__, attempt + 1, retries)
                await asyncio.sleep(2)

    def metrics(self) -> dict:
        return {}
