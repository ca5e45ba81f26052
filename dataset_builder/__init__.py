"""LongWriter on Ray: data generation (AgentWrite), curation, and the shared layers
(LLM engines, storage, config, text utilities) that train/ and eval/ reuse."""

__version__ = "0.1.0"
