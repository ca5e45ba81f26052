"""The trained model as a Hugging Face directory, its metrics and report; the manifest last.

    <output>/model/          config, safetensors, tokenizer, chat template, README.md (the model
                             card), _manifest.json
    <output>/metrics.jsonl   one line per optimizer step (loss, lr, tokens/s, packing, MFU)
    <output>/report.md       summary table and loss.png

`model/_manifest.json` is written after everything else: a model directory without it is not
finished, and a rerun trains (or resumes) instead of trusting it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

from dataset_builder.core import storage
from dataset_builder.core.cards import license_lines, write_card
from dataset_builder.core.config import config_hash, to_dict

MODEL_FILES = (".safetensors", ".json")
SKIP = {"state.json", "optimizer.pt", "scheduler.pt", "_COMMITTED"}


def plot_curves(history: list[dict], path: str, keys: tuple[str, ...] = ("loss",),
                labels: dict | None = None) -> None:
    """One panel per metric over optimizer steps (SFT: the loss; DPO: loss, reward margin and
    accuracy), from the log entries that have them all."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [h for h in history if all(k in h for k in keys)]
    fig, axes = plt.subplots(1, len(keys), figsize=(2 + 4 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot([h["step"] for h in steps], [h[key] for h in steps])
        ax.set_xlabel("optimizer step")
        ax.set_title((labels or {}).get(key, key))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary(history: list[dict]) -> dict:
    if not history:
        return {}
    tail = history[len(history) // 2:] or history  # steady state: skip warm-up steps
    secs = sum(h["seconds"] for h in tail)
    out = {"steps": history[-1]["step"], "first_loss": history[0]["loss"],
           "final_loss": history[-1]["loss"],
           "tokens_per_s": sum(h["tokens"] for h in tail) / secs if secs else None,
           "packing_efficiency": sum(h["packing_efficiency"] for h in history) / len(history),
           "tokens": sum(h["tokens"] for h in history),
           "target_tokens": sum(h.get("target_tokens", 0) for h in history)}
    eot = [h["eot_loss"] for h in history if h.get("eot_loss") is not None]
    if eot:  # the loss on the end-of-turn token: what teaches the model where to stop
        out["first_eot_loss"], out["final_eot_loss"] = eot[0], eot[-1]
    if "mfu" in history[-1]:
        out["mfu"] = sum(h["mfu"] for h in tail) / len(tail)
    return out


def report_md(cfg, final: dict, extra: dict) -> str:
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                     for k, v in final.items())
    data = extra.get("data", {})
    return (f"# SFT report\n\nBase model: `{cfg.model}`  \nData: `{cfg.data}`"
            f"{'  + chat `' + cfg.chat_data + '`' if cfg.chat_data else ''}  \n"
            f"Rows trained: {data.get('rows_kept')} ({data.get('rows_rejected')} rejected, "
            f"see `_rejects/`), packs: {data.get('packs')} of max {cfg.max_length} tokens  \n"
            f"Data fingerprint: `{data.get('fingerprint')}`\n\n"
            f"| metric | value |\n|---|---|\n{rows}\n\n![loss](loss.png)\n")


def publish_model(cfg, src_dir: str, tmp: str) -> dict[str, str]:
    """Copy the model files of `src_dir` (a checkpoint or a saved model) and the base model's
    tokenizer (with its chat template) to <output>/model; returns {file: sha256}."""
    from transformers import AutoTokenizer
    fs, model_path = storage.get_fs(storage.join(cfg.output.rstrip("/"), "model"), cfg.storage)
    for name in os.listdir(src_dir):
        if name.endswith(MODEL_FILES) and name not in SKIP and not name.startswith(
                ("trainer_state", "training_args")):
            shutil.copy(os.path.join(src_dir, name), tmp)
    AutoTokenizer.from_pretrained(cfg.model).save_pretrained(tmp)
    files = {n: hashlib.sha256(open(os.path.join(tmp, n), "rb").read()).hexdigest()
             for n in sorted(os.listdir(tmp))}
    fs.makedirs(model_path, exist_ok=True)
    fs.put(tmp + "/", model_path + "/", recursive=True)
    return files


def model_card(kind: str, cfg, final: dict, extra: dict) -> tuple[dict, str]:
    """(metadata, body) of an exported model's card: base model, data, recipe, final metrics.
    Evaluation results are not known at export; the evaluation's report is beside it."""
    lic, note = license_lines(getattr(cfg, "license", None))
    data = extra.get("data", {})
    meta = {"license": lic, "base_model": cfg.model, "library_name": "transformers",
            "pipeline_tag": "text-generation",
            "tags": ["longwriter", "long-form-generation", "trl", kind]}
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                     for k, v in final.items())
    body = f"""
# {kind.upper()} of {cfg.model.rstrip('/').split('/')[-1]} on long-output data

Trained with this project (LongWriter on Ray, arXiv 2408.07055's recipe): {kind.upper()} on Ray
Train, loss on the assistant turns, in the base model's chat template (kept in this directory).

## How it was made
- Base model: `{cfg.model}`
- Data: `{cfg.data}` (fingerprint `{data.get('fingerprint')}`; {data.get('rows_kept')} rows
  used, {data.get('rows_rejected')} rejected)
- Config hash: `{config_hash(cfg)}`, code version `{extra.get('code_version')}`
- Epochs {cfg.epochs}, learning rate {cfg.learning_rate}, max length {cfg.max_length}

| metric | value |
|---|---|
{rows}

## License
`{lic}`. {note}
"""
    return meta, body


def export(cfg, ckpt_dir: str, state: dict, extra: dict) -> dict:
    """Write the model directory from a checkpoint directory, then metrics, report, manifest."""
    out = cfg.output.rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        files = publish_model(cfg, ckpt_dir, tmp)
        final = summary(state["history"])
        metrics = "".join(json.dumps(h) + "\n" for h in state["history"])
        storage.write_bytes_atomic(storage.join(out, "metrics.jsonl"), metrics.encode(),
                                   cfg.storage)
        if state["history"]:
            plot_curves(state["history"], os.path.join(tmp, "loss.png"),
                        labels={"loss": "SFT loss (mean NLL per target token)"})
            storage.write_bytes_atomic(storage.join(out, "loss.png"),
                                       open(os.path.join(tmp, "loss.png"), "rb").read(),
                                       cfg.storage)
    storage.write_bytes_atomic(storage.join(out, "report.md"),
                               report_md(cfg, final, extra).encode(), cfg.storage)
    write_card(storage.join(out, "model"), *model_card("sft", cfg, final, extra), cfg.storage)
    manifest = {"kind": "sft", "base_model": cfg.model, "files": files,
                "config": to_dict(cfg), "config_hash": config_hash(cfg),
                "resumed_from": state.get("resumed_from", []), "final_metrics": final, **extra}
    storage.write_json(storage.join(out, "model", storage.MANIFEST), manifest, cfg.storage)
    return manifest
