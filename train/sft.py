"""SFT driver: check inputs, prepare packs and rejects, run the loop on Ray Train (or in-process).

    run_sft(cfg)   # what `python -m ray_jobs.sft` calls

Layout of `cfg.output` (local or s3://):
    packs/      BFD packs (input_ids, mask, seq_lengths) + _manifest.json with the fingerprint
    _rejects/   every row not trained on, with file, line and reason
    train/      Ray Train run storage: checkpoints (the last `keep_checkpoints`)
    checkpoints/ the same without Ray (num_workers: 0)
    model/      the exported model; its _manifest.json is written last
A rerun resumes from the last checkpoint; a finished output is left as it is.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter

from dataset_builder.core import progress, records, storage
from dataset_builder.core.config import ConfigError, code_version, config_hash
from dataset_builder.core.model_check import check_model
from train import data as D
from train.config import SFTConfig
from train.data import read_conversations

log = logging.getLogger(__name__)
RUN_NAME = "train"


class TrainError(RuntimeError):
    """Training failed after its retries; the message names the cause and the output."""


def _read(uri: str, source: str, cfg: SFTConfig) -> tuple[list[dict], list[dict]]:
    rows, rejects = read_conversations(uri, cfg.storage, allow_instant=cfg.allow_instant_data)
    for r in rows:
        r["_source"] = source
    return rows, rejects


def prepare(cfg: SFTConfig) -> dict:
    """Read, check, encode, mix and pack the data; write packs/ and _rejects/. Returns the
    packs manifest (reused as is when the same data was prepared before)."""
    from transformers import AutoTokenizer

    out = cfg.output.rstrip("/")
    rows, rejects = _read(cfg.data, "longwriter", cfg)
    if not rows and not rejects:
        raise ConfigError(f"training data is empty: {cfg.data}")
    if cfg.chat_data:
        chat, chat_rejects = _read(cfg.chat_data, "chat", cfg)
        rows, rejects = D.mix(rows, chat, cfg.chat_ratio, cfg.seed), rejects + chat_rejects
    tok = AutoTokenizer.from_pretrained(cfg.model)
    kept, bad = D.encode_rows(rows, tok, cfg.max_length)
    rejects += bad
    reasons = Counter(r["reason"].split(":")[0] for r in rejects)
    if not kept:
        raise ConfigError(f"no trainable rows in {cfg.data}: {len(rows) + len(rejects) - len(bad)}"
                          f" read, all rejected ({dict(reasons)}; max_length {cfg.max_length})")
    fp = D.fingerprint(kept)
    packs_uri = storage.join(out, "packs")
    old = storage.load_manifest(packs_uri, cfg.storage)
    plen = cfg.pack_length or cfg.max_length
    if plen < cfg.max_length:
        raise ConfigError(f"pack_length {plen} < max_length {cfg.max_length}")
    if old and old.get("fingerprint") == fp and old.get("pack_length") == plen and \
            old.get("packing", True) == cfg.packing:
        return old
    if old and has_checkpoints(cfg):
        raise ConfigError(f"{out} holds a training run on other data (fingerprint "
                          f"{old.get('fingerprint', '?')[:12]} != {fp[:12]}): use a new output")
    table = D.pack(kept, plen, cfg.packing)
    lengths = [sum(s) for s in table["seq_lengths"].to_pylist()]
    stats = {"fingerprint": fp, "max_length": cfg.max_length, "pack_length": plen,
             "packing": cfg.packing,
             "rows_kept": len(kept),
             "rows_rejected": len(rejects), "reject_reasons": dict(reasons),
             "rows_by_source": dict(Counter(k["source"] for k in kept)),
             "packs": table.num_rows, "tokens": sum(lengths),
             "target_tokens": sum(sum(k["mask"]) for k in kept),
             "packing_efficiency": sum(lengths) / (table.num_rows * plen)}
    # A new preparation replaces the old one: forget its manifests first (curation's reset),
    # so nothing of it stays visible and the writers start again at part-00000.
    storage.reset_dataset(out, cfg.storage)
    storage.reset_dataset(packs_uri, cfg.storage)
    w = storage.DatasetWriter(storage.join(out, "_rejects"), cfg.storage)
    w.write([{k: r.get(k) for k in records.REJECT.names} for r in rejects], records.REJECT)
    w.commit()
    w = storage.DatasetWriter(packs_uri, cfg.storage)
    w.write(table)
    return w.commit(**stats)


def has_checkpoints(cfg) -> bool:
    """Whether a run (this job's or DPO's) left Ray Train checkpoints in its output."""
    out = cfg.output.rstrip("/")
    return any(storage.exists(storage.join(out, d), cfg.storage)
               for d in (RUN_NAME, "checkpoints"))


def run_config(cfg):
    """Ray Train's RunConfig for a training job's output (local path or s3://), shared by
    SFT and DPO: same run name, failure and checkpoint settings."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    fs, path = storage.get_fs(cfg.output, cfg.storage)
    kwargs = {"storage_path": os.path.abspath(path)}
    if cfg.output.startswith(("s3://", "s3a://")):
        # Ray Train takes a pyarrow filesystem and a path without the scheme; wrapping our
        # fsspec one keeps the endpoint and credentials of the storage layer.
        from pyarrow.fs import FSSpecHandler, PyFileSystem
        kwargs = {"storage_path": path, "storage_filesystem": PyFileSystem(FSSpecHandler(fs))}
    return RunConfig(name=RUN_NAME, **kwargs,
                     failure_config=FailureConfig(max_failures=cfg.max_failures),
                     checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints))


def train_line(c: dict, g: dict, active_s: float) -> str:
    """SFT's and DPO's progress line (rank 0's counts); ETA: steps left at this run's rate."""
    step, total = int(g.get("step", 0)), int(g.get("steps_total", 0))
    text = f"step {step}/{total or '?'}"
    if "loss" in g:
        text += f" | loss {g['loss']:.3f}"
    if c.get("tokens"):
        text += f" | {c['tokens'] / max(active_s, 1e-9):,.0f} tokens/s"
    return text + f" | ETA {progress.eta(total - step, c.get('steps', 0), active_s)}"


def run_workers(cfg, worker, loop_config: dict, job: str) -> None:
    """`worker(loop_config)` in this process (num_workers=0) or on Ray Train workers (`fit`),
    with the job's progress line on the console."""
    progress.check_interval(cfg.progress_interval_s)
    with progress.Console(job, cfg.progress, cfg.progress_interval_s, train_line) as con:
        loop_config = {**loop_config, "progress_board": con.board}
        if cfg.num_workers == 0:
            worker(loop_config)
        else:
            fit(cfg, worker, loop_config)


def fit(cfg, worker, loop_config: dict) -> None:
    """Run `worker` on cfg.num_workers Ray Train workers (SFT and DPO); a failure is one
    TrainError line."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})}
    trainer = TorchTrainer(
        worker, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        run_config=run_config(cfg))
    try:
        trainer.fit()
    except Exception as e:  # TrainingFailedError wraps the worker's error
        raise TrainError(f"training failed (output {cfg.output}): {type(e).__name__}: "
                         f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}") from e


def absolute(cfg, names=("output", "data", "chat_data", "model")):
    """Local paths made absolute: Ray Train workers run in their own working directories."""
    def fix(p):
        local = p and "://" not in p and (p.startswith((".", "~", "/")) or os.path.exists(p))
        return os.path.abspath(os.path.expanduser(p)) if local else p
    return dataclasses.replace(cfg, **{n: fix(getattr(cfg, n)) for n in names})


def run_sft(cfg: SFTConfig) -> dict:
    """Train (or resume) and export; returns the model manifest."""
    cfg = absolute(cfg)
    out = cfg.output.rstrip("/")
    storage.check_reachable(out, cfg.storage)
    done = storage.load_manifest(storage.join(out, "model"), cfg.storage)
    if done:
        if done.get("config_hash") != config_hash(cfg):
            log.warning("%s/model was trained with another config (%s); nothing done. Use a new "
                        "output to train again.", out, done.get("config_hash"))
        return {**done, "skipped": True}
    check_model(cfg.model)  # before any worker starts
    storage.check_reachable(cfg.data, cfg.storage, must_exist="*" not in cfg.data)
    packs = prepare(cfg)
    manifest = {"data": {k: packs.get(k) for k in ("fingerprint", "rows_kept", "rows_rejected",
                                                  "reject_reasons", "rows_by_source", "packs",
                                                  "tokens", "target_tokens",
                                                  "packing_efficiency")},
                "data_uri": cfg.data, "chat_data_uri": cfg.chat_data,
                "code_version": code_version("train", "dataset_builder")}
    loop_config = {"cfg": cfg, "packs": storage.join(out, "packs"), "manifest": manifest}
    from train.loop import train_worker
    run_workers(cfg, train_worker, loop_config, "sft")
    final = storage.load_manifest(storage.join(out, "model"), cfg.storage)
    if not final:
        raise TrainError(f"training ended without an exported model in {out}/model")
    return final
