"""Where a training worker's checkpoints live: Ray Train's storage, or a folder without Ray.

The training loop talks to a `Context` (rank, world size, latest checkpoint, report), so the
same function runs as a Ray Train worker and as a plain process (the GPU machine has no Ray).
A checkpoint is a Hugging Face model directory plus `optimizer.pt`, `scheduler.pt` and
`state.json` (global step, metrics history, resumes), written by rank 0.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile

from dataset_builder.core import storage

STATE = "state.json"
DONE = "_COMMITTED"


class RayContext:
    """Inside a Ray Train worker: checkpoints go through `ray.train.report`."""

    def __init__(self):
        import ray.train
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()

    @contextlib.contextmanager
    def latest(self):
        import ray.train
        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield d

    def report(self, metrics: dict, directory: str | None) -> None:
        import ray.train
        from ray.train import Checkpoint
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory)
                         if directory else None)


class LocalContext:
    """One process, no Ray: checkpoints under `<output>/checkpoints/step-NNNNNNNN`, the last
    `keep` kept; a checkpoint counts once its `_COMMITTED` marker is written."""

    rank, world, local_rank = 0, 1, 0

    def __init__(self, output: str, keep: int, cfg=None):
        self.root, self.keep, self.cfg = storage.join(output, "checkpoints"), keep, cfg

    def _committed(self) -> list[str]:
        fs, path = storage.get_fs(self.root, self.cfg)
        if not fs.exists(path):
            return []
        names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
        return [n for n in names if n.startswith("step-") and fs.exists(f"{path}/{n}/{DONE}")]

    @contextlib.contextmanager
    def latest(self):
        done = self._committed()
        if not done:
            yield None
            return
        fs, path = storage.get_fs(self.root, self.cfg)
        with tempfile.TemporaryDirectory() as tmp:
            fs.get(f"{path}/{done[-1]}/", tmp + "/", recursive=True)
            yield tmp

    def report(self, metrics: dict, directory: str | None) -> None:
        if not directory:
            return
        with open(os.path.join(directory, STATE)) as f:
            step = json.load(f)["step"]
        fs, path = storage.get_fs(self.root, self.cfg)
        dest = f"{path}/step-{step:08d}"
        fs.makedirs(dest, exist_ok=True)
        fs.put(directory.rstrip("/") + "/", dest + "/", recursive=True)
        fs.pipe(f"{dest}/{DONE}", b"")
        for old in self._committed()[:-self.keep] if self.keep > 0 else []:
            fs.rm(f"{path}/{old}", recursive=True)


def make_context(output: str, keep: int, cfg=None):
    try:
        import ray.train
        ray.train.get_context().get_world_size()
        return RayContext()
    except Exception:  # not inside a Ray Train worker
        return LocalContext(output, keep, cfg)


def save_training_state(ctx, loss_mod, optim, sched, state: dict) -> str | None:
    """Gather full weights and optimizer state (all ranks take part), rank 0 writes them to a
    local temporary directory (the Ray Train report copies it to storage)."""
    import torch
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd = get_model_state_dict(loss_mod, options=opts)
    osd = get_optimizer_state_dict(loss_mod, optim, options=opts)
    tmp = tempfile.mkdtemp(prefix="sft-ckpt-") if ctx.rank == 0 else None
    if tmp:
        lm = loss_mod.module.lm if hasattr(loss_mod, "module") else loss_mod.lm
        lm.save_pretrained(tmp, state_dict={k.removeprefix("lm."): v for k, v in msd.items()},
                           safe_serialization=True)
        torch.save(osd, os.path.join(tmp, "optimizer.pt"))
        torch.save(sched.state_dict(), os.path.join(tmp, "scheduler.pt"))
        with open(os.path.join(tmp, STATE), "w") as f:
            json.dump(state, f)
    return tmp
