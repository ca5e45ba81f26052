"""The length sweep (the paper's Section 2): the same base model fine-tuned on the same rows with
the answers cut to different lengths; every arm and the base evaluated on the same prompts. The
paper's finding, shown here: output length follows the length of the SFT data.

    make sweep     # = python -m ray_jobs.length_sweep --config ray_jobs/configs/length_sweep.yaml \
                   #       --set base_model=$(python -m dataset_builder.models demo)

An arm is one unit: cut the rows (train.cut), SFT (ray_jobs.sft), evaluate (ray_jobs.evaluate),
then its small results (samples cut to their first words, figures, training losses) go to
`results/arm-<name>.json`, a folder meant to be committed. A rerun skips every arm whose results
are there with the same key (data, cap, stage configs, base model name), so a sweep resumes
from its last finished arm on any machine; inside an arm, finished stages are skipped too
(`<output>/<arm>/_arm.json`) and a stage resumes through its own job. The report (report.md,
report.json, length_sweep.png) is built from the results folder alone.
Every config field: python -m ray_jobs.length_sweep --help-config
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dataset_builder.core import storage
from dataset_builder.core.config import ConfigError, config_hash, field, load_config, to_dict
from eval.length_sweep import arm_samples, write_report
from ray_jobs import evaluate, sft
from ray_jobs.common import cli, init_ray
from ray_jobs.pipeline import Stage
from train.cut import cut_rows


class SweepError(RuntimeError):
    """A stage of an arm failed; the message names the arm, the stage and its directory."""


@dataclass
class SweepConfig:
    base_model: str = field(help="The model every arm fine-tunes (and that is evaluated as "
        "'base'); a local Hugging Face directory.")
    data: str = field("examples/length_sweep/data", help="The curated rows every arm trains on "
        "(a LongWriter-6k dataset directory; examples/length_sweep/README.md says how it was "
        "made).")
    caps: list[int] = field(default_factory=lambda: [250, 500, 750], help="Answer length caps "
        "in words, one arm each (train.cut: whole paragraphs within the cap).")
    uncut: bool = field(True, help="Also an arm on the uncut rows.")
    base: bool = field(True, help="Also evaluate the base model (no training).")
    min_rows: int = field(8, help="Fewest rows an arm may train on; fewer is an error before "
        "any training starts.")
    output: str = field("./data/length_sweep", help="Scratch directory (local or s3://): each "
        "arm's rows, SFT run and model, evaluation. Large; not committed.")
    results: str = field("examples/length_sweep/results", help="Local folder of the small "
        "results: arm-<name>.json per arm, report.md/json, length_sweep.png. Commit it: the "
        "sweep resumes from it and the report is built from it.")
    sft: Stage = field(default_factory=Stage, help="SFT for every arm (ray_jobs.sft): the same "
        "recipe, so every arm takes the same number of optimizer steps.")
    evaluate: Stage = field(default_factory=Stage, help="Evaluation of every arm and the base "
        "(ray_jobs.evaluate) on the same prompts.")
    word_count_mode: str = field("legacy", help="How words are counted for the cut and the "
        "measures (the evaluation's counter: legacy or unicode).")
    end_at_sentence: bool = field(True, help="End every arm's answers (the uncut arm's too) "
        "at a sentence end (train.cut.end_at_sentence): a step stopped at max_tokens ends "
        "mid-sentence, and an end-of-turn token there cannot be learned.")
    host: str = field("", help="The machine it ran on, written into the report (e.g. the CPU "
        "model from lscpu).")
    storage: storage.StorageConfig = field(default_factory=storage.StorageConfig,
                                           help="Object-store settings.")


def arms(cfg: SweepConfig) -> list[tuple[str, int | None, bool]]:
    """(name, cap, trained) for every arm, in order: the base, the caps ascending, uncut."""
    out = [("base", None, False)] if cfg.base else []
    out += [(f"cap{c}", c, True) for c in sorted(cfg.caps)]
    return out + ([("uncut", None, True)] if cfg.uncut else [])


def _check(cfg: SweepConfig) -> tuple[object, str]:
    """The committed rows and their fingerprint; one ConfigError for anything that cannot run,
    before any training starts."""
    if any(c <= 0 for c in cfg.caps):
        raise ConfigError(f"caps must be positive numbers of words, got {cfg.caps}")
    if not arms(cfg):
        raise ConfigError("nothing to run: no caps, uncut and base both off")
    manifest = storage.load_manifest(cfg.data, cfg.storage)
    if manifest is None:
        raise ConfigError(f"no committed rows at {cfg.data}: make them with the command in "
                          "examples/length_sweep/README.md (or set data=)")
    table = storage.read_dataset(cfg.data, cfg.storage)
    for name, cap, trained in arms(cfg):
        n = cut_rows(table, cap, cfg.word_count_mode, cfg.end_at_sentence).num_rows \
            if trained else cfg.min_rows
        if n < cfg.min_rows:
            raise ConfigError(f"arm {name}: {n} of {table.num_rows} rows left after the cut, "
                              f"fewer than min_rows {cfg.min_rows}")
    fp = hashlib.sha256(json.dumps([f["sha256"] for f in manifest["files"]]).encode())
    return table, fp.hexdigest()[:16]


def _key(cfg: SweepConfig, cap: int | None, trained: bool, data_fp: str) -> str:
    """What an arm's result depends on, independent of the machine's paths."""
    parts = [data_fp, cap, trained, Path(cfg.base_model).name, cfg.word_count_mode,
             to_dict(cfg.evaluate), to_dict(cfg.sft) if trained else None]
    if trained and cfg.end_at_sentence:   # added later: keys of arms without it stay valid
        parts.append("end_at_sentence")
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _stage(state: dict, state_uri: str, name: str, arm: str, where: str, run, scfg) -> dict:
    """Run one stage of an arm unless it finished before; a failure is one line naming it."""
    if state.get(name, {}).get("status") == "finished":
        print(f"[sweep] {arm}/{name}: finished earlier, skipped ({where})", flush=True)
        return state[name]
    print(f"[sweep] {arm}/{name}: running -> {where}", flush=True)
    t0 = time.time()
    try:
        result = run()
    except Exception as e:
        raise SweepError(f"arm {arm}, stage {name} failed (output {where}; rerun to resume "
                         f"there): {type(e).__name__}: {e}") from e
    state[name] = {"status": "finished", "wall_s": round(time.time() - t0, 1), **result}
    storage.write_json(state_uri, state, scfg)
    return state[name]


def train_summary(manifest: dict, history: list[dict], cut_words: list[int]) -> dict:
    """What an arm trained on and how its losses ended. A step is one row, and rows differ a
    lot (one row's end-of-turn loss was 0.4, another's 21 nats at the same point), so the
    final losses are means over the last epoch (the last `rows` steps), not the last step."""
    m, d = manifest.get("final_metrics", {}), manifest.get("data", {})
    rows = d.get("rows_kept") or len(cut_words)
    last = history[-rows:]
    eot = [h["eot_loss"] for h in last if h.get("eot_loss") is not None]
    return {"rows": rows, "steps": m.get("steps"), "train_tokens": m.get("target_tokens"),
            "loss_first": m.get("first_loss"),
            "loss_final": round(sum(h["loss"] for h in last) / len(last), 4) if last else None,
            "eot_loss_final": round(sum(eot) / len(eot), 4) if eot else None,
            "tokens_per_s": m.get("tokens_per_s"), "answer_words_max": max(cut_words),
            "history": [[round(h["loss"], 4), None if h.get("eot_loss") is None
                         else round(h["eot_loss"], 4)] for h in history]}


def _history(sft_out: str, scfg) -> list[dict]:
    lines = storage.read_bytes(storage.join(sft_out, "metrics.jsonl"), scfg).decode()
    return [h for h in map(json.loads, filter(str.strip, lines.splitlines())) if "loss" in h]


def run_arm(cfg: SweepConfig, table, name: str, cap: int | None, trained: bool,
            key: str) -> dict:
    """One arm: cut rows -> SFT -> evaluation -> results/arm-<name>.json."""
    out, scfg = storage.join(cfg.output.rstrip("/"), name), cfg.storage
    state_uri = storage.join(out, "_arm.json")
    state = storage.read_json(state_uri, scfg) if storage.exists(state_uri, scfg) else {}
    if state.get("key") != key:
        # another key (rows, cut or a stage config changed): nothing of the old arm may be
        # reused, and the stage jobs would (an SFT output of the same config is "trained", a
        # stored generation of the same model path is "done"), so the arm starts empty
        fs, path = storage.get_fs(out, scfg)
        if state and fs.exists(path):
            print(f"[sweep] {name}: {out} holds another key's run: removed", flush=True)
            fs.rm(path, recursive=True)
        state = {"key": key}
    model, train = cfg.base_model, None
    if trained:
        rows = cut_rows(table, cap, cfg.word_count_mode, cfg.end_at_sentence)

        def write_rows() -> dict:
            storage.reset_dataset(storage.join(out, "data"), scfg)
            w = storage.DatasetWriter(storage.join(out, "data"), scfg, {"cap_words": cap})
            w.write(rows)
            w.commit()
            return {"rows": rows.num_rows}
        _stage(state, state_uri, "data", name, f"{out}/data", write_rows, scfg)
        sft_cfg = load_config(sft.CONFIG, cfg.sft.config or None, [
            *cfg.sft.set, f"model={cfg.base_model}", f"data={out}/data", f"output={out}/sft"])
        sft_cfg.storage = scfg
        done = _stage(state, state_uri, "sft", name, f"{out}/sft",
                      lambda: train_summary(sft.main(sft_cfg), _history(f"{out}/sft", scfg),
                                            rows.column("response_words").to_pylist()), scfg)
        model, train = f"{out}/sft/model", {k: v for k, v in done.items() if k != "status"}
    ev = load_config(evaluate.CONFIG, cfg.evaluate.config or None, [
        *cfg.evaluate.set, f"engine.model={model}", f"output={out}/eval", "judge_enabled=false"])
    ev.storage = scfg
    _stage(state, state_uri, "eval", name, f"{out}/eval",
           lambda: {"S_l": evaluate.main(ev)["overall"]["S_l"]}, scfg)
    result = {"arm": name, "cap_words": cap, "key": key, "base_model": Path(cfg.base_model).name,
              "train": train, "eval_wall_s": state["eval"]["wall_s"],
              "samples": arm_samples(f"{out}/eval", scfg, cfg.word_count_mode)}
    Path(cfg.results).mkdir(parents=True, exist_ok=True)
    Path(cfg.results, f"arm-{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def run_sweep(cfg: SweepConfig) -> dict:
    table, data_fp = _check(cfg)
    for name, cap, trained in arms(cfg):
        key = _key(cfg, cap, trained, data_fp)
        path = Path(cfg.results, f"arm-{name}.json")
        if path.exists() and json.loads(path.read_text()).get("key") == key:
            print(f"[sweep] {name}: results in {path} (same key): skipped", flush=True)
            continue
        run_arm(cfg, table, name, cap, trained, key)
    meta = {"base_model": Path(cfg.base_model).name, "data": cfg.data, "host": cfg.host,
            "data_fingerprint": data_fp, "config_hash": config_hash(cfg)}
    report = write_report(cfg.results, [a[0] for a in arms(cfg)], meta)
    print(f"report: {cfg.results}/report.md")
    return report


def main(cfg: SweepConfig) -> dict:
    init_ray()
    report = run_sweep(cfg)
    for a in report["arms"]:
        print(json.dumps({k: a.get(k) for k in ("name", "cap_words", "median_words_2k_plus",
                                                 "eos_share", "distinct_4gram", "S_l_2k_plus")}))
    return report


CONFIG = SweepConfig

if __name__ == "__main__":
    sys.exit(cli(CONFIG, main, description=__doc__, expected=(SweepError,)))
