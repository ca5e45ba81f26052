"""LongWriter on Ray: data generation (AgentWrite, selection) and curation; `core/` is the layer
every package may use (config, storage, records, text, instructions, model checks) and `llm/` the
engine layer above it (DESIGN.md §2 lists the allowed imports)."""

from dataset_builder.core.config import VERSION as __version__  # noqa: F401
