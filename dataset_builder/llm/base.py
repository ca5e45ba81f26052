"""The engine layer's contracts: requests (Sampling), answers (Completion), the engine a task
calls (`Engine`), the task an engine replica runs per row (`EngineTask`), and EngineConfig."""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Literal, Protocol

from dataset_builder.core.config import ConfigError, check_least, field


class EngineError(RuntimeError):
    """The engine could not serve a request (bad model path, endpoint refused, context overflow)."""


def text_only(messages: list[dict]) -> list[dict]:
    """The messages without the `token_ids` a model turn may carry (only the vllm backend's
    renderer uses them; APIs, templates and prompt hashes see text)."""
    return [{k: v for k, v in m.items() if k != "token_ids"} for m in messages]


@dataclass
class Sampling:
    """Decoding parameters for one request; backends translate them to their own form."""
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 1024
    min_tokens: int = 0
    ignore_eos: bool = False
    seed: int | None = None
    stop: list[str] = dc_field(default_factory=list)
    regex: str | None = None          # structured output: the text must match this regex
    json_schema: dict | None = None   # structured output: the text must be JSON of this schema
    repetition_penalty: float = 1.0   # >1 discourages any token already in prompt or output
    frequency_penalty: float = 0.0    # OpenAI semantics: minus this x count of the token so far
    presence_penalty: float = 0.0     # OpenAI semantics: minus this once a token has appeared
    prompt_logprobs: bool = False     # return each prompt token's log-probability (vllm only)
    # What the request is, for the instant backend (instant_engine.py), which answers from
    # these without parsing the prompt; model backends ignore them.
    kind: str = ""                    # plan | write | estimate | judge | answer (eval) | ""
    budget: int | None = None         # plan: required words; write: the step's words
    row: str = ""                     # the row id it serves (with `step`: reruns are identical)
    step: int = 0                     # AgentWrite step (0 = plan), judge replicate, ...


@dataclass
class Completion:
    text: str
    finish_reason: str        # "stop" | "length" | "error" | "abort"
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int = 0    # prompt tokens served from the prefix cache (vllm backend)
    token_ids: list[int] | None = None  # generated ids (vllm backend), for splicing the turn back
    prompt_ids: list[int] | None = None       # with Sampling.prompt_logprobs: the prompt's ids
    prompt_logprobs: list[float | None] | None = None  # ... and each one's log-probability
    #                                           (None for the first, which has no context)


def counted(stats: dict, c: Completion) -> Completion:
    """Add one request and its tokens to an engine's `stats` (what its metrics() reports)."""
    stats["requests"] += 1
    stats["prompt_tokens"] += c.prompt_tokens
    stats["output_tokens"] += c.output_tokens
    return c


class Engine(Protocol):
    """What every backend is (vllm_engine.VLLMEngine, openai_engine.OpenAIEngine, and
    llm.RemoteEngine for a running EngineActor): the only things a task may use."""
    batch: Any   # batch_stats.BatchStats while EngineConfig.batch_stats is on, else None

    async def chat(self, messages: list[dict], sampling: Sampling) -> Completion:
        """One chat request; raises EngineError when it cannot be served."""
        ...

    def metrics(self) -> dict:
        """Counters so far (requests, tokens, prefix hits): the job's `_stats.json`."""
        ...


class EngineTask(Protocol):
    """One row's work in an engine replica (llm/stage.py): generation.AgentWriteTask,
    eval.stages.GenerateTask and JudgeTask. Built in each replica as `task_cls(**task_kwargs)`;
    `run` gets the row's payload (core.records.StageRow) decoded, and returns what is merged
    into it: at least `status` ("ok" or "reject", with `stage` and `reason`)."""
    stage: str                    # its name in rejects
    accepts: tuple[str, ...]      # row statuses it runs on; other rows pass untouched
    engine_key: str               # the payload key that records which replica ran the row

    async def run(self, engine: Engine, item: dict) -> dict: ...


@dataclass
class InstantConfig:
    latency_s: float = field(0.0, help="Seconds each request waits before its answer (0: at "
        "once), to rehearse an engine of a given speed.")
    paragraphs: int = field(8, help="Paragraphs of each plan; the budgets add up to the "
        "request's required words (2,000 when it states none).")
    duplicate_share: float = field(0.01, help="Share of rows (by a hash of the row id) whose "
        "answer is a near copy of another planted row's (same required words, one word of the "
        "first paragraph changed), so curation's dedup has real work.")
    duplicate_groups: int = field(4, help="Planted rows of one required length share one of "
        "this many texts.")
    tokens_per_word: float = field(1.3, help="Output tokens reported per word written.")


# Fields of EngineConfig that vllm_kwargs may not repeat: one setting, one place.
_VLLM_EXPLICIT = {"model": "model", "max_model_len": "max_model_len", "dtype": "dtype",
                  "enforce_eager": "enforce_eager", "seed": "seed",
                  "enable_prefix_caching": "enable_prefix_caching", "block_size": "block_size",
                  "max_num_seqs": "max_num_seqs", "tensor_parallel_size": "tensor_parallel_size",
                  "gpu_memory_utilization": "gpu_memory_utilization",
                  "disable_log_stats": "(always on: the project counts its own metrics)",
                  "structured_outputs_config": "(set by the engine: compact JSON)"}


@dataclass
class EngineConfig:
    backend: Literal["vllm", "openai", "instant"] = field("vllm", help="vllm: in-process "
        "AsyncLLM in a Ray actor; openai: an OpenAI-compatible endpoint (base_url); instant: no "
        "model, answers made at once from each request's kind and budget (rehearsing the "
        "orchestration at scale: llm/instant_engine.py; its outputs are marked instant:<model>).")
    model: str = field("", help="Model path or id. vllm: a local directory or hub id; openai: "
        "the model name the endpoint serves.")
    max_model_len: int = field(8192, help="Context length (prompt + output tokens).")
    dtype: str = field("bfloat16", help="vllm: weight dtype (bfloat16 on CPU and GPU).")
    enforce_eager: bool = field(True, help="vllm: skip CUDA-graph/compile warmup (True on CPU; "
        "False on GPU for throughput).")
    enable_prefix_caching: bool = field(True, help="vllm: reuse KV of shared prompt prefixes "
        "(AgentWrite steps share instruction+plan+text so far).")
    block_size: int | None = field(None, help="vllm: KV-cache block size in tokens (None: the "
        "engine's default, 128 on CPU). Prefix caching reuses whole blocks only, so 32 raises "
        "reuse between AgentWrite steps on CPU; on GPU the default (16) is already fine.")
    max_num_seqs: int = field(128, help="vllm: most sequences the engine batches at once.")
    gpu_memory_utilization: float = field(0.9, help="vllm on GPU: share of GPU memory for the engine.")
    cpu_reserved_cores: int | None = field(0, help="vllm on CPU: cores kept away from the "
        "model worker for vLLM's scheduler process (VLLM_CPU_NUM_OF_RESERVED_CPU; None: vLLM's "
        "default of 1). 0 is faster on a 2-core machine (docs/BENCHMARKS.md).")
    cpu_kvcache_gib: int = field(4, help="vllm on CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE).")
    tensor_parallel_size: int = field(1, help="vllm: GPUs per engine.")
    num_gpus: float = field(0.0, help="Ray resources: GPUs per engine actor (0 on CPU).")
    num_cpus: float = field(1.0, help="Ray resources: CPUs per engine actor.")
    min_replicas: int = field(1, help="Engine stage: replicas kept up (Ray Data actor pool "
        "min_size). On an autoscaling cluster 1 starts the job on the first node that fits.")
    max_replicas: int = field(1, help="Engine stage: most replicas (max_size); the pool grows "
        "toward it while rows queue and the autoscaler adds the nodes (cluster.yaml bounds).")
    in_flight: int = field(128, help="Engine stage: rows in flight per replica (whole "
        "AgentWrite instructions, judge requests). For a vllm engine at least max_num_seqs, or "
        "batch slots stay empty. More rows keep requests waiting, which fills the slot a row "
        "leaves between its steps and shortens the tail, but only while the KV cache holds "
        "the waiting rows' prefixes (else they are evicted and the prefix hit rate falls). "
        "Check with batch_stats; measurements in docs/BENCHMARKS.md.")
    rows_per_task: int = field(8, help="Engine stage: rows per Ray Data task (block). Every "
        "task costs the driver's scheduler a few ms, so one-row tasks cap a job near a hundred "
        "rows/s whatever the fleet (docs/BENCHMARKS.md, \"Scale\"); rows still start and "
        "finish one by one (a replica runs in_flight rows at once across its tasks), but a "
        "row's output leaves with its task's last row. 1: the old one-row tasks. The least: "
        "a large input gets more (max_queued_tasks).")
    max_queued_tasks: int = field(20_000, help="Engine stage: most tasks the whole input is cut "
        "into; an input of more than rows_per_task * max_queued_tasks rows gets more rows per "
        "task. Ray Data queues a stage's input blocks as soon as they are made and bounds a "
        "queue by bytes, not by count, so every task of the input waits at once, each costing "
        "the driver a few KB (1M rows in 8-row tasks: ~1 GB; docs/DESIGN.md §13). 0: no cap.")
    batch_stats: bool = field(False, help="vllm: count how full the engine's batch was (mean "
        "running sequences / max_num_seqs over the time it had work, waiting share, KV usage, "
        "preemptions; llm/batch_stats.py) into the engine's metrics and the job's stats.")
    start_timeout_s: int = field(1800, help="Engine stage: how long the job waits for its "
        "first min_replicas to be up (an autoscaler starting GPU nodes, model downloads) "
        "before it fails with one line naming the resources it asked for.")
    attach: str = field("", help="Engine stage: name of a running EngineActor to send requests "
        "to instead of starting an engine per replica (a shared long-lived engine; tests).")
    seed: int = field(0, help="Engine seed (vllm) / default request seed.")
    vllm_kwargs: dict = field(default_factory=dict, help="vllm: any other vLLM engine argument "
        "(vllm.engine.arg_utils.AsyncEngineArgs), passed as given: quantization, "
        "speculative_config, pipeline_parallel_size, ... (Ray's vLLM processor calls this "
        "engine_kwargs). A key of a field above is an error; a key the installed vLLM does not "
        "know fails the replica's start with one line naming it.")
    base_url: str = field("", help="openai: endpoint base URL, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str = field("OPENAI_API_KEY", help="openai: name of the environment variable "
        "that holds the API key (the key itself never appears in config or output).")
    max_concurrency: int = field(16, help="openai: most requests in flight at once.")
    max_retries: int = field(5, help="openai: retries on 429, 5xx and timeouts (exponential backoff).")
    request_timeout_s: float = field(600.0, help="openai: per-request timeout in seconds.")
    backoff_s: float = field(1.0, help="openai: first retry delay; doubles each retry (with jitter).")
    instant: InstantConfig = field(default_factory=InstantConfig,
                                   help="instant: what the instant backend answers.")

    def label(self) -> str:
        """The model name outputs record: `instant:<model>` for the instant backend, so its
        rows are never mistaken for a model's."""
        return f"instant:{self.model or 'engine'}" if self.backend == "instant" else self.model

    def __post_init__(self):
        check_least(self, "engine.", rows_per_task=1, in_flight=1, max_queued_tasks=0)
        twice = sorted(k for k in self.vllm_kwargs if k in _VLLM_EXPLICIT)
        if twice:
            k = twice[0]
            raise ConfigError(f"engine.vllm_kwargs.{k} duplicates engine.{_VLLM_EXPLICIT[k]}")
        if self.vllm_kwargs and self.backend != "vllm":
            raise ConfigError(f"engine.vllm_kwargs is for backend vllm, not {self.backend!r}")
