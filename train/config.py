"""SFT configuration: one dataclass, help text on every field, kept apart from the trainer.

Loaded from `ray_jobs/configs/sft*.yaml` by `python -m ray_jobs.sft`; `--help-config` prints it.
Defaults are the paper's SFT recipe (lr 1e-5, cosine, 3% warmup, weight decay 0.1, betas
(0.9, 0.95), 4 epochs, bf16, gradient checkpointing, 32k tokens, over-long rows skipped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dataset_builder.core.config import field
from dataset_builder.core.storage import StorageConfig


@dataclass
class SFTConfig:
    model: str = field(help="Base model: a local Hugging Face directory (config.json, "
                       "safetensors, tokenizer with a chat template).")
    data: str = field(help="Training data: a curated dataset directory (only parts listed in "
                      "its _manifest.json count), a generation directory (prompt/response), or "
                      "jsonl/parquet files (one, or a glob) with a `messages` column as "
                      "LongWriter-6k is published. Local or s3://.")
    output: str = field(help="Output URI: prepared packs, checkpoints, model/, metrics, report.")
    chat_data: str | None = field(None, help="Optional general chat data (same formats as "
                                  "`data`), mixed in as the paper mixes LongWriter-6k with "
                                  "general SFT data.")
    chat_ratio: float = field(1.0, help="Chat rows per long-output row (sampled with `seed`, "
                              "without replacement, capped at what `chat_data` has).")
    max_length: int = field(32768, help="Pack length in tokens. Rows longer than this are "
                            "rejected (`too_long`), never truncated (the paper's code skips them).")
    pack_length: int | None = field(
        None, help="Tokens per pack (default: max_length). Documents are never split, so with "
        "LongWriter-like lengths (most over half of max_length) packs of max_length stay partly "
        "empty; 2 x max_length fills them better at the same attention cost per document "
        "(varlen attention), for activations of twice the tokens.")
    packing: bool = field(True, help="Pack several rows into each pack (best-fit decreasing, "
        "documents never attend to each other). False: one row per pack, so with "
        "packs_per_step 1 and one worker every optimizer step is one row (the length sweep: "
        "every arm takes the same number of steps whatever its rows' lengths).")
    epochs: float = field(4.0, help="Passes over the packed data.")
    max_steps: int | None = field(None, help="Stop after this many optimizer steps (overrides "
                                  "epochs when set).")
    packs_per_step: int = field(1, help="Packs per worker per optimizer step (gradient "
                                "accumulation); the loss averages over every target token of "
                                "all packs of all workers in the step.")
    learning_rate: float = field(1e-5, help="Peak learning rate (AdamW).")
    lr_scheduler: Literal["cosine", "linear", "constant"] = field(
        "cosine", help="Decay after warmup.")
    warmup_ratio: float = field(0.03, help="Fraction of steps with linear warmup.")
    weight_decay: float = field(0.1, help="AdamW weight decay (matrices only; norms and biases "
                                "are not decayed).")
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95], help="AdamW betas.")
    max_grad_norm: float = field(1.0, help="Gradient clipping norm (0 disables).")
    precision: Literal["auto", "bf16-mixed", "bf16", "fp32"] = field(
        "auto", help="bf16-mixed: fp32 weights and optimizer, bf16 compute (autocast under DDP, "
        "MixedPrecisionPolicy under FSDP), so lr-1e-5 updates are not rounded away; bf16: "
        "bf16 weights and optimizer (half the memory, updates below bf16's resolution are "
        "lost); fp32. auto = bf16-mixed on GPU, fp32 on CPU (bf16 is slow on CPUs without AMX).")
    attention: Literal["auto", "varlen", "sdpa", "eager"] = field(
        "auto", help="Attention over packs; all keep documents from attending to each other. "
        "varlen (= auto): on CUDA torch's varlen flash attention over document boundaries "
        "(skips cross-document blocks), on CPU causal SDPA per document (flash kernel, O(T) "
        "memory); sdpa/eager: a block-diagonal mask built from position ids (T^2 memory per "
        "layer).")
    gradient_checkpointing: bool = field(True, help="Recompute activations in backward "
                                         "(needed for long sequences on GPU).")
    loss_chunk_tokens: int = field(4096, help="Target tokens per LM-head + cross-entropy chunk: "
                                   "logits are computed only at target positions, a chunk at a "
                                   "time, so a 32k pack never holds all its logits.")
    seed: int = field(42, help="Seed for mixing, pack order and weights of new heads.")
    num_workers: int = field(2, help="Ray Train workers; 0 runs the training loop in this "
                             "process without Ray.")
    use_gpu: bool = field(False, help="One GPU per worker (NCCL); CPU workers use gloo.")
    cpus_per_worker: int = field(1, help="CPUs per worker (also its torch threads).")
    strategy: Literal["ddp", "fsdp"] = field(
        "ddp", help="ddp: a full replica per worker; fsdp: FSDP2 (fully_shard per decoder "
        "layer) for models that do not fit one GPU.")
    save_every: int = field(50, help="Checkpoint every N optimizer steps (and at the end).")
    keep_checkpoints: int = field(2, help="Checkpoints kept on storage (the last N).")
    max_failures: int = field(3, help="Worker-group restarts from the last checkpoint before "
                              "the job fails.")
    log_every: int = field(1, help="Report metrics every N steps.")
    allow_instant_data: bool = field(False, help="Train on rows made by the instant engine "
        "(model instant:...; a stand-in without a model, for rehearsals): refused by default.")
    license: str | None = field(None, help="The exported model's license, written into its "
        "model card (model/README.md); unset: `unknown`, and the card says why it matters.")
    progress: bool = field(True, help="Print a progress line every progress_interval_s: "
        "step of all steps, loss, tokens/s, ETA (counted on rank 0).")
    progress_interval_s: float = field(30.0, help="Seconds between progress lines.")
    storage: StorageConfig = field(default_factory=StorageConfig, help="Storage.")


def resolved_precision(precision: str, cuda: bool) -> str:
    if precision == "auto":
        return "bf16-mixed" if cuda else "fp32"
    return precision


def resolved_attention(cfg_attention: str, cuda: bool) -> str:
    return "varlen" if cfg_attention == "auto" else cfg_attention


@dataclass
class DPOTrainConfig:
    model: str = field(help="The policy to start from (the SFT export: a local Hugging Face "
                       "directory with its chat template); also the reference model.")
    data: str = field(help="Preference pairs: a pairs directory (python -m ray_jobs.pairs), or "
                      "jsonl/parquet files (one, or a glob) with prompt, chosen, rejected "
                      "(conversational or plain strings). Local or s3://.")
    output: str = field(help="Output URI: prepared data, _rejects/, checkpoints, model/, "
                        "metrics, report with loss, reward margin and accuracy curves.")
    beta: float = field(0.1, help="DPO beta: strength of the pull toward the reference model.")
    loss_type: str = field("sigmoid", help="TRL loss type (sigmoid = the DPO paper's; ipo, "
                           "hinge, robust, ...).")
    learning_rate: float = field(1e-6, help="Peak learning rate (AdamW).")
    lr_scheduler: Literal["cosine", "linear", "constant"] = field("cosine", help="Decay "
                                                                  "after warmup.")
    warmup_ratio: float = field(0.1, help="Fraction of steps with linear warmup.")
    max_length: int = field(32768, help="Tokens of prompt + answer. Pairs with a longer side "
                            "are rejected (`too_long`), never truncated.")
    epochs: float = field(2.0, help="Passes over the pairs.")
    max_steps: int | None = field(None, help="Stop after this many optimizer steps "
                                  "(overrides epochs when set).")
    batch_size: int = field(1, help="Pairs per worker per micro-batch.")
    grad_accum: int = field(8, help="Micro-batches per optimizer step.")
    reference: Literal["precompute", "frozen"] = field(
        "precompute", help="precompute: the reference log-probs in one pass before training "
        "(no second model in memory); frozen: a frozen copy of the model alongside.")
    precision: Literal["auto", "bf16", "fp32"] = field("auto", help="auto = bf16 on GPU, "
                                                       "fp32 on CPU.")
    gradient_checkpointing: bool = field(True, help="Recompute activations in backward.")
    seed: int = field(42, help="Seed for data order and dropout.")
    num_workers: int = field(2, help="Ray Train workers (data parallel); 0 runs in this "
                             "process without Ray.")
    use_gpu: bool = field(False, help="One GPU per worker.")
    cpus_per_worker: int = field(1, help="CPUs per worker (also its torch threads: Ray sets "
                                 "OMP_NUM_THREADS from them).")
    save_every: int = field(50, help="Checkpoint every N optimizer steps (and at the end).")
    keep_checkpoints: int = field(2, help="Checkpoints kept on storage (the last N).")
    max_failures: int = field(3, help="Worker-group restarts from the last checkpoint before "
                              "the job fails.")
    allow_instant_data: bool = field(False, help="Train on rows made by the instant engine "
        "(model instant:...; a stand-in without a model, for rehearsals): refused by default.")
    license: str | None = field(None, help="The exported model's license, written into its "
        "model card (model/README.md); unset: `unknown`, and the card says why it matters.")
    progress: bool = field(True, help="Print a progress line every progress_interval_s: "
        "step of all steps, loss, ETA (counted on rank 0).")
    progress_interval_s: float = field(30.0, help="Seconds between progress lines.")
    storage: StorageConfig = field(default_factory=StorageConfig, help="Object-store settings.")
