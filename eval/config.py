"""EvalConfig: everything that defines a LongBench-Write / LongWrite-Ruler run.

Defaults are the published protocol (temperature 0.5, 32,768 new tokens at most, seed 42,
GPT-4o as judge at temperature 0.5, legacy word counting); `ray_jobs/configs/evaluate.yaml` spells
them out and `evaluate_tiny.yaml` is the CPU test configuration.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dataset_builder.core.config import field
from dataset_builder.core.storage import StorageConfig
from dataset_builder.llm.base import EngineConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
# The published evaluation sets, vendored (Apache-2.0, see its NOTICE) so that a fresh clone and
# `ray job submit --working-dir .` carry them.
DEFAULT_DATA_DIR = "eval/data/longbench_write"
RULER_FILE = "eval/data/longwrite_ruler/longwrite_ruler.jsonl"   # the published set
RULER_LENGTHS = [1000, 2000, 5000, 10000, 20000, 30000]


def _published_judge() -> EngineConfig:
    return EngineConfig(backend="openai", model="gpt-4o-2024-05-13",
                        base_url="https://api.openai.com/v1", max_model_len=128000,
                        max_concurrency=16, num_cpus=0.5)


# `field` is dataset_builder.core.config.field (a dataclasses.field with mandatory help), which
# ruff's RUF009 cannot tell from an arbitrary call.
@dataclass
class EvalConfig:
    engine: EngineConfig = field(  # noqa: RUF009
        default_factory=EngineConfig, help="The model under test (vllm: an engine pool of "
        "min_replicas..max_replicas; openai: an OpenAI-compatible endpoint). Its own chat "
        "template is used.")
    judge: EngineConfig = field(  # noqa: RUF009
        default_factory=_published_judge, help="The S_q judge "
        "(published: gpt-4o-2024-05-13 through the OpenAI API; or a vllm model): a second "
        "pool beside the model's.")
    data_dir: str = field(DEFAULT_DATA_DIR, help="Directory (fsspec URI) with "
        "longbench_write.jsonl and longbench_write_en.jsonl; a relative path is resolved "
        "against the repository root.")
    subset: Literal["all", "en"] = field("all", help="all: the 120 prompts; en: the 60-prompt "
        "English-output subset.")
    limit: int = field(0, help="Evaluate only the first N benchmark prompts (0 = all). A "
        "limited run is marked as such in results.json.")
    output: str = field("outputs/eval", help="Output directory (fsspec URI): results.json, "
        "samples.jsonl, report.md, plots, resume state.")
    storage: StorageConfig = field(  # noqa: RUF009
        default_factory=StorageConfig, help="Object-store settings.")
    word_count_mode: Literal["legacy", "unicode"] = field("legacy", help="legacy: the published "
        "counter (compare with the paper); unicode: every script, digits, contractions.")
    seed: int = field(42, help="Run seed: per-sample generation and judge seeds derive from it "
        "and the item id; also seeds the bootstrap.")
    temperature: float = field(0.5, help="Generation temperature (published: 0.5).")
    top_p: float = field(1.0, help="Generation top-p (published: no nucleus truncation).")
    max_new_tokens: int = field(32768, help="Generation cap (published 32768, room for 20,000 "
        "words); vllm also caps it at max_model_len minus the prompt.")
    generate: bool = field(True, help="Generate missing responses (False: score what the "
        "output directory already holds).")
    judge_enabled: bool = field(True, help="Judge responses for S_q (False: S_l only).")
    judge_samples: int = field(1, help="k judge samples per response; S_q is their mean, with "
        "the standard deviation recorded.")
    judge_temperature: float = field(0.5, help="Judge temperature (published: 0.5).")
    judge_max_tokens: int = field(1024, help="Judge answer cap in tokens (published: 1024): "
        "a brief analysis, then six ratings.")
    judge_max_attempts: int = field(3, help="Judge calls per (response, replicate) before the "
        "failure is recorded (malformed or out-of-range answers are retried with a new seed).")
    judge_constraint: Literal["auto", "json_schema", "none"] = field("auto", help="json_schema: "
        "constrain the judge's answer (vllm, vllm serve, OpenAI structured outputs from "
        "gpt-4o-2024-08-06 on); none: free text, validated and retried (endpoints without "
        "structured outputs, such as the published gpt-4o-2024-05-13); auto: json_schema for "
        "a vllm judge, none for an openai endpoint.")
    judge_analysis_max_chars: int = field(0, help="Bound the judge's analysis in the schema "
        "(maxLength; vLLM grammars support it, OpenAI strict mode does not): keeps a weak judge "
        "from rambling past judge_max_tokens (which should then exceed it by ~150: a "
        "constrained model may spend up to one token per character). 0 = unbounded.")
    judge_tokenizer: str = field("", help="Tokenizer (path or id) to fit responses into the "
        "judge's context exactly; default: the judge model for vllm, characters for openai.")
    judge_rpm: float = field(0.0, help="Judge requests per minute at most (API rate limit; "
        "0 = unlimited, concurrency still bounded by judge.max_concurrency), shared evenly "
        "among judge.max_replicas replicas.")
    judge_cache: str = field("", help="Judge cache directory (fsspec URI); default "
        "<output>/judge_cache. Keyed by judge model, prompt version and judged message.")
    bootstrap_resamples: int = field(2000, help="Bootstrap resamples for the 95% CIs.")
    min_required_words: int = field(0, help="Only LongBench-Write prompts that ask for at "
        "least this many words (e.g. 2000: its long requests); applied before `limit`. 0: all.")
    ruler: bool = field(True, help="Also run LongWrite-Ruler (its prompts x ruler_lengths).")
    ruler_set: Literal["published", "project"] = field("published", help="published: the "
        "LongWrite-Ruler prompts as released with the paper (eval/data/longwrite_ruler, "
        "compare with its figures); project: 8 prompts written for this project.")
    ruler_languages: list[str] = field(default_factory=list, help="Ruler prompts of these "
        "languages only (e.g. [en]); empty: all.")
    ruler_lengths: list[int] = field(  # noqa: RUF009
        default_factory=lambda: list(RULER_LENGTHS), help="LongWrite-Ruler required lengths.")
    ruler_prompts: int = field(0, help="Use only the first N ruler prompts (after "
        "ruler_languages; 0 = all).")
    progress: bool = field(True, help="Print a progress line every progress_interval_s: "
        "responses written and judged of those to do, failures, output tokens/s, ETA.")
    progress_interval_s: float = field(30.0, help="Seconds between progress lines.")


def resolve_data_dir(data_dir: str) -> str:
    """A relative local path is taken relative to the repository root (not the cwd), so the
    default finds eval/data/longbench_write from any working directory."""
    if "://" in data_dir or Path(data_dir).is_absolute():
        return data_dir
    return str((REPO_ROOT / data_dir).resolve())
