"""The per-worker SFT loop: runs as a Ray Train worker or as one plain process.

    python -m train.loop --config ray_jobs/configs/sft_tiny.yaml --set packs=out/packs ...

(no Ray: what the GPU machine runs). Each optimizer step takes `packs_per_step` packs per worker;
the loss is the sum of NLL over every target token of the step on every worker divided by their
global count (the paper's fix: long outputs are not under-weighted), computed by all-reducing
the token count first and scaling each pack's summed NLL by world / count (DDP and FSDP average
gradients over workers). The schedule of packs is a pure function of the step, so a resumed run
continues at the step after its checkpoint with exactly the packs it would have seen.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import torch
import torch.distributed as dist

from dataset_builder.core import progress, storage
from train.checkpoint import (
    STATE,
    LocalContext,
    RayContext,
    make_context,
    save_training_state,
)
from train.config import SFTConfig, resolved_attention, resolved_precision
from train.export import export
from train.model import PackLoss, load_model, pack_tensors

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


def schedule(n_packs: int, world: int, per_step: int, seed: int) -> tuple[int, callable]:
    """(steps per epoch, slot(step, micro, rank) -> pack index or -1 for an idle slot).

    Each epoch is a seeded permutation padded to a multiple of world * per_step; an idle slot
    runs a zero-weight pack so every worker does the same collectives."""
    per = world * per_step
    spe = max(1, math.ceil(n_packs / per))

    def slot(step: int, micro: int, rank: int) -> int:
        epoch, k = divmod(step, spe)
        order = list(range(n_packs))
        random.Random(seed + epoch).shuffle(order)
        i = k * per + micro * world + rank
        return order[i] if i < n_packs else -1
    return spe, slot


def total_steps(cfg: SFTConfig, steps_per_epoch: int) -> int:
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))


def _lr_lambda(kind: str, warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return {"constant": 1.0, "linear": 1.0 - progress,
                "cosine": 0.5 * (1.0 + math.cos(math.pi * progress))}[kind]
    return f


def _wrap(model, cfg: SFTConfig, device, mixed: bool = False):
    """DDP (a replica per worker) or FSDP2 (each decoder layer sharded), only when distributed.
    Under FSDP, bf16-mixed is its MixedPrecisionPolicy (fp32 shards, bf16 compute)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return model
    if cfg.strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        kw = {"mp_policy": mp} if mixed else {}
        for layer in model.lm.base_model.layers:
            fully_shard(layer, **kw)
        return fully_shard(model, **kw)
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def _optimizer(model, cfg: SFTConfig, cuda: bool) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (norm gains and biases are not decayed, as in HF
    Trainer and the paper's DeepSpeed setup)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=tuple(cfg.adam_betas),
                             **({"fused": True} if cuda else {}))


def _flops_per_token(lm) -> tuple[float, float]:
    """(6 x parameters, causal attention flops per token per unit of context) for MFU."""
    c = lm.config
    params = sum(p.numel() for p in lm.parameters())
    return 6.0 * params, 6.0 * c.num_hidden_layers * c.hidden_size


def _peak(device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


@dataclass
class Training:
    """What the step loop works on: model, optimizer and lr schedule, packs and their order."""
    cfg: SFTConfig
    ctx: RayContext | LocalContext
    model: torch.nn.Module        # PackLoss, under DDP or FSDP when distributed
    lm: torch.nn.Module           # the bare language model (its size gives MFU)
    optim: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    packs: pa.Table
    slot: Callable[[int, int, int], int]   # schedule()'s (step, micro, rank) -> pack index
    steps: int
    device: torch.device
    autocast: bool = False


def _prepare(cfg: SFTConfig, ctx: RayContext | LocalContext, ckpt: str | None, *,
             packs: pa.Table, slot: Callable[[int, int, int], int], steps: int,
             device: torch.device) -> Training:
    """Model, optimizer and lr schedule: from the checkpoint when resuming, else fresh."""
    cuda = device.type == "cuda"
    prec = resolved_precision(cfg.precision, cuda)
    lm = load_model(ckpt or cfg.model, "bfloat16" if prec == "bf16" else "float32",
                    resolved_attention(cfg.attention, cuda), cfg.gradient_checkpointing)
    lm.to(device).train()
    mixed = prec == "bf16-mixed"
    model = _wrap(PackLoss(lm, cfg.loss_chunk_tokens), cfg, device, mixed)
    # DDP or one process: autocast; FSDP: its MixedPrecisionPolicy does the casting
    autocast = mixed and not (cfg.strategy == "fsdp" and ctx.world > 1)
    optim = _optimizer(model, cfg, cuda)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, _lr_lambda(
        cfg.lr_scheduler, math.ceil(cfg.warmup_ratio * steps), steps))
    if ckpt:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )
        osd = torch.load(os.path.join(ckpt, "optimizer.pt"), weights_only=False)
        set_optimizer_state_dict(model, optim, osd,
                                 options=StateDictOptions(full_state_dict=True))
        sched.load_state_dict(torch.load(os.path.join(ckpt, "scheduler.pt")))
    return Training(cfg=cfg, ctx=ctx, model=model, lm=lm, optim=optim, sched=sched,
                    packs=packs, slot=slot, steps=steps, device=device, autocast=autocast)


def train_worker(config: dict) -> dict:
    """config: {"cfg": SFTConfig, "packs": table or URI of packs, "manifest": fields for the
    exported model's manifest}. Returns the final state."""
    cfg: SFTConfig = config["cfg"]
    progress.attach(config.get("progress_board"))
    ctx = make_context(cfg.output, cfg.keep_checkpoints, cfg.storage)
    cuda = cfg.use_gpu and torch.cuda.is_available()
    device = torch.device("cuda", ctx.local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, cfg.cpus_per_worker))
    torch.manual_seed(cfg.seed)
    packs = config["packs"]
    if isinstance(packs, str):
        uri, packs = packs, storage.read_dataset(packs, cfg.storage)
        if packs is None:
            raise FileNotFoundError(f"no committed packs at {uri}")
    spe, slot = schedule(packs.num_rows, ctx.world, cfg.packs_per_step, cfg.seed)
    steps = total_steps(cfg, spe)

    with ctx.latest() as ckpt:
        state = {"step": 0, "history": [], "resumed_from": []}
        if ckpt:
            with open(os.path.join(ckpt, STATE)) as f:
                state = json.load(f)
            if state["step"] >= steps:  # trained; only the export is missing
                if ctx.rank == 0:
                    export(cfg, ckpt, state, config.get("manifest", {}))
                return state
            state["resumed_from"].append(state["step"])
        run = _prepare(cfg, ctx, ckpt, packs=packs, slot=slot, steps=steps, device=device)
    if ctx.rank == 0 and state["resumed_from"]:
        print(f"resumed from checkpoint at step {state['step']}", flush=True)

    final = run_steps(run, state)
    if final:
        export(cfg, final, state, config.get("manifest", {}))
        shutil.rmtree(final, ignore_errors=True)
    return state


def _batch(packs, i: int, device) -> tuple[dict, int]:
    idle = i < 0
    i = max(i, 0)
    lengths = packs["seq_lengths"][i].as_py()
    ids, mask = packs["input_ids"][i].as_py(), packs["mask"][i].as_py()
    if idle:  # a zero-weight stand-in: same collectives, no contribution
        ids, mask, lengths = ids[:lengths[0]], mask[:lengths[0]], lengths[:1]
    return pack_tensors(ids, mask, lengths, device), (0 if idle else sum(lengths))


def _all_sum(values: list[float], device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def accumulate(model, batches: list[tuple[dict, int]], world: int, device, autocast=False):
    """Forward and backward over one step's packs of this worker, leaving in the gradients
    d/dw of (sum of NLL over every target token of every worker) / (their global count).
    Returns (this worker's summed NLL, the global target count, attention work)."""
    n_local = sum(len(b["labels"]) for b, real in batches if real)
    n_global = _all_sum([n_local], device)[0]
    ddp = hasattr(model, "no_sync")
    nll, attn_work = 0.0, 0.0
    for m, (b, real) in enumerate(batches):
        sync = not ddp or m == len(batches) - 1  # DDP all-reduces on the last pack only
        with model.no_sync() if not sync else contextlib.nullcontext():
            with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=autocast):
                s = model(**b)
            # DDP/FSDP divide the summed gradients by world: scale it back in.
            (s * (world / n_global if real and n_global else 0.0)).backward()
        if real:
            nll += float(s.detach())
            attn_work += float(sum(L * L for L in b["cu_seq_lens"].diff().tolist())) / 2
    return nll, n_global, attn_work


def _train_step(run: Training, step: int, flops: tuple[float, float],
                peak: float | None) -> dict:
    """One optimizer step over this step's packs; returns its history record (loss, MFU, ...)."""
    cfg, ctx, device = run.cfg, run.ctx, run.device
    t0 = time.time()
    batches = [_batch(run.packs, run.slot(step, m, ctx.rank), device)
               for m in range(cfg.packs_per_step)]
    loss_mod = getattr(run.model, "module", run.model)   # PackLoss, under DDP or not
    loss_mod.eot_nll, loss_mod.eot_n = 0.0, 0
    nll, n_global, attn_work = accumulate(run.model, batches, ctx.world, device, run.autocast)
    grad_norm = (torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.max_grad_norm)
                 if cfg.max_grad_norm > 0 else torch.tensor(0.0))
    run.optim.step()
    run.sched.step()
    run.optim.zero_grad(set_to_none=True)
    tokens = sum(real for _, real in batches)
    nll, tokens, attn_work, eot_nll, eot_n = _all_sum(
        [nll, tokens, attn_work, loss_mod.eot_nll, loss_mod.eot_n], device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.time() - t0
    rec = {"step": step + 1, "loss": nll / max(n_global, 1), "lr": run.sched.get_last_lr()[0],
           "grad_norm": float(grad_norm), "tokens": int(tokens),
           "target_tokens": int(n_global), "tokens_per_s": tokens / dt, "seconds": dt,
           "eot_loss": eot_nll / eot_n if eot_n else None,
           "packing_efficiency": tokens / (ctx.world * cfg.packs_per_step
                                           * (cfg.pack_length or cfg.max_length))}
    if peak:
        rec["mfu"] = (flops[0] * tokens + flops[1] * attn_work) / dt / (peak * ctx.world)
    return rec


def run_steps(run: Training, state: dict) -> str | None:
    """Train from state['step'] to `run.steps`; returns rank 0's final checkpoint directory.
    Rank 0 counts each step for the job's progress line (core.progress; the driver prints it)."""
    cfg, ctx, steps = run.cfg, run.ctx, run.steps
    flops, peak = _flops_per_token(run.lm), _peak(run.device)
    while state["step"] < steps:
        rec = _train_step(run, state["step"], flops, peak)
        state["step"] = rec["step"]
        state["history"].append(rec)
        if ctx.rank == 0:
            progress.add(steps=1, tokens=rec["tokens"])
            progress.gauge(step=rec["step"], steps_total=steps, loss=rec["loss"])
        last = state["step"] == steps
        if last or state["step"] % cfg.save_every == 0:
            d = save_training_state(ctx, run.model, run.optim, run.sched, state)
            ctx.report(rec, d)
            if last:
                return d  # the caller exports from it, then removes it
            if d:
                shutil.rmtree(d, ignore_errors=True)
        elif state["step"] % cfg.log_every == 0:
            ctx.report(rec, None)
    return None
