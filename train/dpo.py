"""DPO on Ray Train with TRL's DPOTrainer: preference pairs -> checked, length-bounded rows ->
a policy trained against a reference (precomputed log-probs or a frozen copy) -> model.

    run_dpo(cfg)     # prepare -> TorchTrainer(dpo_worker) -> export; `python -m ray_jobs.dpo`

Same scaffolding as SFT (train/sft.py): the rows are prepared once on the driver into
`<output>/data` (rejects with file and line in `<output>/_rejects`), every worker reads them
from storage, checkpoints go to `<output>/train` through Ray Train (RayTrainReportCallback
copies each Trainer checkpoint there), a restarted worker group resumes from the last one, and
the model directory's manifest is written last. Rows are never truncated: a pair with a side
over `max_length` tokens is rejected, as the SFT job rejects over-long rows.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

from dataset_builder.core import progress, records, storage
from dataset_builder.core.cards import write_card
from dataset_builder.core.config import code_version, config_hash, to_dict
from dataset_builder.core.model_check import check_model
from train.config import DPOTrainConfig
from train.data import check_messages, read_conversations
from train.export import model_card, plot_curves, publish_model
from train.sft import TrainError, absolute, has_checkpoints, run_workers

log = logging.getLogger(__name__)
PAIR_COLUMNS = (("prompt", "chosen", "rejected"),)
STAGE = "dpo_data"


def _turns(value, role: str) -> list[dict] | None:
    """A side as chat turns: a plain string becomes one turn of `role`; lists pass through."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return value if isinstance(value, list) else None


def check_pair(row: dict) -> tuple[dict | None, str]:
    """(pair as turns, "") or (None, reason): sides present, text, different, well-formed."""
    for side in ("prompt", "chosen", "rejected"):
        if row.get(side) is None:
            return None, f"missing_side: {side}"
    prompt = _turns(row["prompt"], "user")
    sides = {s: _turns(row[s], "assistant") for s in ("chosen", "rejected")}
    if prompt is None or None in sides.values():
        return None, "bad_type: prompt, chosen and rejected must be strings or lists of turns"
    for side, turns in sides.items():
        ok, why = check_messages(prompt + turns)
        if not ok:
            return None, f"{side}: {why}"
    if sides["chosen"] == sides["rejected"]:
        return None, "identical_sides: chosen equals rejected"
    return {"prompt": prompt, **sides}, ""


def _tokens(tokenizer, turns: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(turns, tokenize=True, return_dict=False))


def prepare(cfg: DPOTrainConfig) -> dict:
    """Checked rows into <output>/data, rejects into <output>/_rejects; returns counts."""
    from collections import Counter

    from transformers import AutoTokenizer
    out = cfg.output.rstrip("/")
    rows, rejects = read_conversations(cfg.data, cfg.storage, PAIR_COLUMNS,
                                        cfg.allow_instant_data)
    for r in rejects:
        r["stage"] = STAGE
    tok = AutoTokenizer.from_pretrained(cfg.model)
    kept = []
    for row in rows:
        pair, why = check_pair(row)
        if pair:
            n = max(_tokens(tok, pair["prompt"] + pair[s]) for s in ("chosen", "rejected"))
            why = f"too_long: {n} tokens > max_length {cfg.max_length}" \
                if n > cfg.max_length else ""
        if why:
            raw = json.dumps({k: v for k, v in row.items() if not k.startswith("_")},
                             ensure_ascii=False, default=str)
            rejects.append({"id": row.get("id"), "line": row["_line"], "stage": STAGE,
                            "reason": why, "raw": raw[:2000], "file": row["_file"]})
        else:
            kept.append(pair)
    if not kept:
        raise TrainError(f"no usable preference pairs in {cfg.data} ({len(rejects)} rejected: "
                         f"{dict(Counter(r['reason'].split(':')[0] for r in rejects))})")
    for sub in ("data", "_rejects"):
        storage.reset_dataset(storage.join(out, sub), cfg.storage)
    data = storage.DatasetWriter(storage.join(out, "data"), cfg.storage)
    data.write([{k: json.dumps(v, ensure_ascii=False) for k, v in p.items()} for p in kept])
    data.commit()
    rej = storage.DatasetWriter(storage.join(out, "_rejects"), cfg.storage)
    if rejects:
        rej.write(rejects, records.REJECT)
    rej.commit()
    return {"rows_kept": len(kept), "rows_rejected": len(rejects),
            "reject_reasons": dict(Counter(r["reason"].split(":")[0] for r in rejects))}


def _trl_args(cfg: DPOTrainConfig, local_dir: str, cuda: bool):
    from trl import DPOConfig
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    return DPOConfig(
        output_dir=local_dir, beta=cfg.beta, loss_type=[cfg.loss_type],
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio, num_train_epochs=cfg.epochs,  # < 1: a ratio
        max_steps=cfg.max_steps or -1, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, max_length=cfg.max_length,
        precompute_ref_log_probs=cfg.reference == "precompute",
        gradient_checkpointing=cfg.gradient_checkpointing, bf16=bf16, use_cpu=not cuda,
        seed=cfg.seed, logging_steps=1, save_strategy="steps", save_steps=cfg.save_every,
        save_total_limit=2, report_to=[], dataloader_num_workers=0, disable_tqdm=True)


def _shared_dataset(cfg: DPOTrainConfig):
    """The prepared rows as an on-disk `datasets.Dataset` at one path per node. TRL maps (and
    caches the reference log-probs) on the main process and lets the other ranks read its cache
    files next to the dataset's own; an in-memory dataset caches in a per-process temp dir the
    others cannot see (seen: FileNotFoundError on rank 1). Workers on other nodes than rank 0
    need a shared disk for `reference: precompute` (or use `reference: frozen`)."""
    import hashlib

    import datasets
    manifest = storage.load_manifest(storage.join(cfg.output, "data"), cfg.storage)
    key = hashlib.sha256(json.dumps([cfg.output, [f["sha256"] for f in manifest["files"]]])
                         .encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"longwriter-dpo-{key}")
    if not os.path.exists(path):
        table = storage.read_dataset(storage.join(cfg.output, "data"), cfg.storage)
        tmp = f"{path}.tmp-{os.getpid()}"
        datasets.Dataset.from_list([{k: json.loads(v) for k, v in r.items()}
                                    for r in table.to_pylist()]).save_to_disk(tmp)
        try:
            os.rename(tmp, path)  # the first worker on the node wins; the rows are the same
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(path)


def dpo_worker(config: dict) -> None:
    """One Ray Train worker (or the only process with num_workers=0): TRL's DPOTrainer on the
    prepared rows, resuming from the last Ray Train checkpoint; rank 0 exports."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    cfg: DPOTrainConfig = config["cfg"]
    progress.attach(config.get("progress_board"))
    cuda = cfg.use_gpu and torch.cuda.is_available()
    ds = _shared_dataset(cfg)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
    ref = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype) \
        if cfg.reference == "frozen" else None
    callbacks, resume = [_progress_callback()], None
    local = tempfile.mkdtemp(prefix="dpo-")
    if config.get("ray"):
        import ray.train
        from ray.train.huggingface.transformers import RayTrainReportCallback
        callbacks.append(RayTrainReportCallback())
        ckpt = ray.train.get_checkpoint()
        if ckpt:  # copy out of the (possibly remote) checkpoint before Trainer reads it
            with ckpt.as_directory() as d:
                resume = shutil.copytree(os.path.join(d, "checkpoint"),
                                         os.path.join(local, "resume"))
    trainer = DPOTrainer(model=model, ref_model=ref, args=_trl_args(cfg, local, cuda),
                         train_dataset=ds, processing_class=AutoTokenizer.from_pretrained(
                             cfg.model), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    if trainer.is_world_process_zero():
        final = os.path.join(local, "final")
        trainer.save_model(final)
        export(cfg, final, trainer.state.log_history, resume, config["manifest"])


def _progress_callback():
    """Rank 0's steps and loss for the job's progress line (core.progress)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.is_world_process_zero:
                progress.add(steps=1)
                progress.gauge(step=state.global_step, steps_total=state.max_steps)

        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs and "loss" in logs:
                progress.gauge(loss=float(logs["loss"]))
    return Progress()


def export(cfg: DPOTrainConfig, model_dir: str, history: list[dict], resumed: str | None,
           extra: dict) -> dict:
    """Model directory, metrics.jsonl, report.md + curves.png, then the manifest (last)."""
    out = cfg.output.rstrip("/")
    steps = [h for h in history if "rewards/accuracies" in h]
    final = {k: steps[-1].get(k) for k in ("step", "loss", "rewards/margins",
                                          "rewards/accuracies")} if steps else {}
    if steps:
        final["first_accuracy"] = steps[0]["rewards/accuracies"]
    with tempfile.TemporaryDirectory() as tmp:
        files = publish_model(cfg, model_dir, tmp)
        plot_curves(history, os.path.join(tmp, "curves.png"),
                    ("loss", "rewards/margins", "rewards/accuracies"))
        storage.write_bytes_atomic(storage.join(out, "curves.png"),
                                   open(os.path.join(tmp, "curves.png"), "rb").read(), cfg.storage)
    storage.write_bytes_atomic(storage.join(out, "metrics.jsonl"), "".join(
        json.dumps(h) + "\n" for h in history).encode(), cfg.storage)
    table = "\n".join(f"| {k} | {v} |" for k, v in final.items())
    storage.write_bytes_atomic(storage.join(out, "report.md"), (
        f"# DPO report\n\nPolicy and reference: `{cfg.model}`  \nPairs: `{cfg.data}` "
        f"({extra['data']['rows_kept']} used, {extra['data']['rows_rejected']} rejected, see "
        f"`_rejects/`)  \nbeta {cfg.beta}, loss {cfg.loss_type}, reference {cfg.reference}\n\n"
        f"| metric | value |\n|---|---|\n{table}\n\n![curves](curves.png)\n").encode(),
        cfg.storage)
    write_card(storage.join(out, "model"), *model_card("dpo", cfg, final, extra), cfg.storage)
    manifest = {"kind": "dpo", "base_model": cfg.model, "files": files, "config": to_dict(cfg),
                "config_hash": config_hash(cfg), "resumed": bool(resumed),
                "final_metrics": final, **extra}
    storage.write_json(storage.join(out, "model", storage.MANIFEST), manifest, cfg.storage)
    return manifest


def run_dpo(cfg: DPOTrainConfig) -> dict:
    """Train (or resume) and export; returns the model manifest. A finished output is kept."""
    cfg = absolute(cfg, ("output", "data", "model"))
    out = cfg.output.rstrip("/")
    storage.check_reachable(out, cfg.storage)
    done = storage.load_manifest(storage.join(out, "model"), cfg.storage)
    if done:
        return {**done, "skipped": True}
    check_model(cfg.model)
    storage.check_reachable(cfg.data, cfg.storage, must_exist="*" not in cfg.data)
    prepared = storage.join(out, "data", "_prepared.json")
    if has_checkpoints(cfg) and storage.exists(prepared, cfg.storage):
        data = storage.read_json(prepared, cfg.storage)  # resume on the rows it started with
    else:
        data = prepare(cfg)
        storage.write_json(prepared, data, cfg.storage)
    loop = {"cfg": cfg, "manifest": {"data": data, "data_uri": cfg.data,
                                     "code_version": code_version("train", "dataset_builder")}}
    run_workers(cfg, dpo_worker, {**loop, "ray": cfg.num_workers > 0}, "dpo")
    final = storage.load_manifest(storage.join(out, "model"), cfg.storage)
    if not final:
        raise TrainError(f"training ended without an exported model in {out}/model")
    return final
