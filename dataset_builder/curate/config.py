"""CurateConfig: the curation job's settings (the filters' and dedup's own sections live beside
their code, in filters.py and dedup.py)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dataset_builder.core.config import check_least, field
from dataset_builder.core.progress import check_interval
from dataset_builder.core.storage import StorageConfig
from dataset_builder.curate.dedup import DedupConfig
from dataset_builder.curate.filters import FilterConfig
from dataset_builder.curate.signals import SignalsConfig


@dataclass
class CurateConfig:
    input: str = field(help="generation dataset directory (fsspec URI, e.g. "
                       "s3://bucket/run/generations): parquet parts + _manifest.json")
    output: str = field(help="curated LongWriter-6k dataset directory (fsspec URI)")
    storage: StorageConfig = dataclasses.field(
        default_factory=StorageConfig, metadata={"help": "object store settings"})
    filters: FilterConfig = dataclasses.field(
        default_factory=FilterConfig, metadata={"help": "quality filters"})
    dedup: DedupConfig = dataclasses.field(
        default_factory=DedupConfig, metadata={"help": "exact and near-duplicate removal"})
    signals: SignalsConfig = dataclasses.field(
        default_factory=SignalsConfig, metadata={"help": "model-based quality signals "
                                                 "(perplexity, relevance); opt-in"})
    rows_per_shard: int = field(1000, help="rows per output parquet shard (the last one may "
                                "be smaller)")
    max_response_chars: int = field(500_000, help="reject responses longer than this before "
                                    "parsing them (32k words is about 200k characters)")
    num_cpus: float = field(1.0, help="CPUs per Ray Data task of the per-row stages")
    license: str | None = field(None, help="the curated data's license, written into its "
                                "dataset card (README.md); unset: `unknown`, and the card says "
                                "why it matters (the generator's and instructions' terms)")
    progress: bool = field(True, help="print a progress line every progress_interval_s: rows "
                           "filtered of the input's rows, rejects so far, ETA")
    progress_interval_s: float = field(30.0, help="seconds between progress lines")

    def __post_init__(self):
        check_least(self, rows_per_shard=1)
        check_interval(self.progress_interval_s)
