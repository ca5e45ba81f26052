"""LLM engine layer: one async interface (`chat(messages, sampling) -> Completion`), two backends.

- `vllm`:   AsyncLLM in-process (vllm_engine.py), hosted in a Ray actor (actor.py).
- `openai`: any OpenAI-compatible endpoint (openai_engine.py): GPT-4o, `vllm serve`, ...
"""
from dataset_builder.llm.base import Completion, EngineConfig, EngineError, Sampling  # noqa: F401
