"""The paper in miniature, one job: instructions -> AgentWrite -> curation -> SFT ->
LongBench-Write + LongWrite-Ruler on the base and the trained model -> one report.

Each stage is the project's own job (generate, curate, sft, evaluate) run with its own config
file and overrides (a section of this config) into its own directory under `output`; the
pipeline only wires one stage's output to the next one's input. `<output>/_pipeline.json`
records each finished stage with the hash of its resolved config: a rerun skips those, and a
stage that failed resumes through its own job's resume logic.

Locally (demo model, ~2 h on 2 cores):
    python -m ray_jobs.pipeline --config ray_jobs/configs/pipeline_mini.yaml \
        --set base_model=$(python -m dataset_builder.models demo)
On a cluster (see configs/pipeline_paper.yaml; every path may be s3://):
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m ray_jobs.pipeline --config ray_jobs/configs/pipeline_paper.yaml \
        --set base_model=/models/Llama-3.1-8B --set output=s3://bucket/paper1
A stage alone: the job named in the stage's `_config.yaml`, e.g.
    python -m ray_jobs.sft --config <output>/sft/_config.yaml
What every stage will do and cost, before anything starts: add --dry-run.
Every config field: python -m ray_jobs.pipeline --help-config
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

from dataset_builder.core import storage
from dataset_builder.core.config import config_hash, field, load_config
from dataset_builder.core.model_check import check_model
from dataset_builder.estimate import estimate, lines
from eval.evaluate import check_config, work_items
from ray_jobs.common import cli, init_ray, save_resolved_config


class PipelineError(RuntimeError):
    """A stage failed; the message names the stage and its output directory."""


@dataclass
class Stage:
    config: str = field("", help="The stage job's YAML config (ray_jobs/configs/...); the "
        "pipeline sets its input, output and model keys.")
    set: list[str] = field(default_factory=list, help="Overrides for that config, as with the "
        "job's own --set.")
    enabled: bool = field(True, help="Run this stage.")


@dataclass
class PipelineConfig:
    output: str = field(help="Pipeline directory (local or s3://): one subdirectory per stage, "
        "report.md/json and PNGs, _pipeline.json.")
    base_model: str = field(help="The model that is trained (SFT) and evaluated as 'base'.")
    generator_model: str = field("", help="AgentWrite's model (default: base_model). The "
        "paper used GPT-4o (an openai-backend generate config).")
    judge_model: str = field("", help="S_q judge model for both evaluations (vllm backend; "
        "default: the evaluate config's judge).")
    generate: Stage = field(default_factory=Stage, help="AgentWrite (ray_jobs.generate).")
    curate: Stage = field(default_factory=Stage, help="Curation (ray_jobs.curate).")
    sft: Stage = field(default_factory=Stage, help="SFT (ray_jobs.sft).")
    pairs: Stage = field(default_factory=lambda: Stage(enabled=False), help="Preference pairs "
        "from the SFT model (ray_jobs.pairs; set its `data`: the instructions to sample). Off "
        "unless enabled.")
    dpo: Stage = field(default_factory=lambda: Stage(enabled=False), help="DPO of the SFT "
        "model on the pairs (ray_jobs.dpo). Off unless enabled (needs pairs).")
    evaluate: Stage = field(default_factory=Stage, help="LongBench-Write + Ruler "
        "(ray_jobs.evaluate), run on the base model and on each trained model.")
    storage: storage.StorageConfig = field(default_factory=storage.StorageConfig,
                                           help="Object-store settings for every stage.")


# Which finished stage each stage reads: its skip key includes theirs, so a stage whose input
# was rebuilt runs again (through its own resume logic) instead of being skipped.
DEPENDS = {"generate": (), "curate": ("generate",), "sft": ("curate",), "pairs": ("sft",),
           "dpo": ("pairs",), "eval_base": (), "eval_sft": ("sft",), "eval_dpo": ("dpo",)}


def _plan(p: PipelineConfig) -> list[tuple[str, Stage, str, list[str]]]:
    """(name, section, output dir, wired overrides) for the enabled stages, in order."""
    out = p.output.rstrip("/")
    d = {s: f"{out}/{s}" for s in DEPENDS}
    judge = [f"judge.model={p.judge_model}"] if p.judge_model else []
    stages = [
        ("generate", p.generate, d["generate"], [
            f"output={d['generate']}", f"engine.model={p.generator_model or p.base_model}"]),
        ("curate", p.curate, d["curate"], [
            f"input={d['generate']}/generations", f"output={d['curate']}"]),
        ("sft", p.sft, d["sft"], [
            f"model={p.base_model}", f"data={d['curate']}", f"output={d['sft']}"]),
        ("pairs", p.pairs, d["pairs"], [
            f"model={d['sft']}/model", f"output={d['pairs']}",
            *[f"scoring.{j}" for j in judge]]),
        ("dpo", p.dpo, d["dpo"], [
            f"model={d['sft']}/model", f"data={d['pairs']}", f"output={d['dpo']}"]),
        ("eval_base", p.evaluate, d["eval_base"], [
            f"engine.model={p.base_model}", f"output={d['eval_base']}", *judge]),
        ("eval_sft", p.evaluate, d["eval_sft"], [
            f"engine.model={d['sft']}/model", f"output={d['eval_sft']}", *judge]),
        ("eval_dpo", p.evaluate if p.dpo.enabled else Stage(enabled=False), d["eval_dpo"], [
            f"engine.model={d['dpo']}/model", f"output={d['eval_dpo']}", *judge]),
    ]
    return [s for s in stages if s[1].enabled]


def _job(name: str):
    """The stage's job module (its config class and main), imported when the stage runs."""
    import importlib
    module = name if name in ("generate", "curate", "sft", "pairs", "dpo") else "evaluate"
    job = importlib.import_module(f"ray_jobs.{module}")
    return job, job.CONFIG


def _summary(name: str, result: dict) -> dict:
    """Wall time, throughput and drops of one stage, from what its job returned."""
    if name == "generate":
        return {**{k: result.get(k) for k in ("instructions_in", "rows_in_output",
                                              "output_tokens", "output_tokens_per_s")},
                "rejects_by_reason": result.get("rejects_by_reason", {})}
    if name == "curate":
        f = result["funnel"]
        return {"rows_in": f["rows_in"], "rows_out": f["rows_out"],
                "rejects_by_reason": {r: n for s in f["stages"] for r, n in s["reasons"].items()}}
    if name == "sft":
        m, d = result.get("final_metrics", {}), result.get("data", {})
        return {"rows": d.get("rows_kept"), "packs": d.get("packs"),
                **{k: m.get(k) for k in ("steps", "first_loss", "final_loss", "tokens_per_s")}}
    if name == "pairs":
        return {k: result.get(k) for k in ("instructions", "samples", "pairs")} | {
            "rejects_by_reason": result.get("dropped", {})}
    if name == "dpo":
        return {"pairs": result.get("data", {}).get("rows_kept"),
                **result.get("final_metrics", {})}
    o, run = result["overall"], result.get("run", {})
    return {"S": o["S"], "S_l": o["S_l"], "S_q": o["S_q"], "generated": run.get("generated"),
            "judge_calls": run.get("judge_calls"), "seconds": run.get("seconds"),
            "output_tokens_generated": run.get("output_tokens_generated")}


def _stage_key(cfg, upstream: list[str]) -> str:
    import hashlib
    return hashlib.sha256(json.dumps([config_hash(cfg), *upstream]).encode()).hexdigest()[:16]


def run_pipeline(p: PipelineConfig) -> dict:
    out = p.output.rstrip("/")
    state_uri = storage.join(out, "_pipeline.json")
    state = storage.read_json(state_uri, p.storage) if storage.exists(state_uri, p.storage) \
        else {"stages": {}}
    save_resolved_config(p, out, p.storage)
    for name, section, stage_out, wired in _plan(p):
        job, cls = _job(name)
        cfg = load_config(cls, section.config or None, [*section.set, *wired])
        cfg.storage = p.storage
        h = _stage_key(cfg, [state["stages"].get(d, {}).get("key", "") for d in DEPENDS[name]])
        done = state["stages"].get(name, {})
        if done.get("status") == "finished" and done.get("key") == h:
            print(f"[pipeline] {name}: finished earlier, skipped ({stage_out})")
            continue
        print(f"[pipeline] {name}: running -> {stage_out}", flush=True)
        t0 = time.time()
        try:
            result = job.main(cfg)
        except Exception as e:  # one line naming the stage; the traceback goes to a file
            import traceback
            log = storage.join(out, f"_failed_{name}.txt")
            storage.write_bytes_atomic(log, traceback.format_exc().encode(), p.storage)
            raise PipelineError(f"stage {name} failed (output {stage_out}; rerun to resume "
                                f"there; traceback: {log}): {type(e).__name__}: {e}") from e
        state["stages"][name] = {"status": "finished", "key": h, "output": stage_out,
                                 "wall_s": round(time.time() - t0, 1),
                                 "summary": _summary(name, result)}
        storage.write_json(state_uri, state, p.storage)
    from eval.compare import write_pipeline_report
    report = write_pipeline_report(out, state, p.storage)
    print(f"report: {out}/report.md  ({out}/report.json)")
    return report


def dry_run(p: PipelineConfig) -> dict:
    """--dry-run: every enabled stage's config built and checked (as the run would, in one
    line on failure), the inputs that exist now checked, and what each stage will cost as far
    as it can be known before the stages before it ran: the generation estimate
    (dataset_builder/estimate.py), the evaluations' upper bound (prompts x max_new_tokens),
    training's per-row figures (what curation keeps is not known). No Ray, no engine."""
    from ray_jobs.generate import preflight
    check_model(p.base_model, "base_model")
    found: dict[str, dict] = {}
    gen = None
    for name, section, _, wired in _plan(p):
        _, cls = _job(name)
        cfg = load_config(cls, section.config or None, [*section.set, *wired])
        cfg.storage = p.storage
        if name == "generate":
            preflight(cfg)
            gen = found[name] = estimate(cfg, set(), set())
            print("\n".join(f"[dry run] generate: {x}" for x in lines(gen)))
        elif name.startswith("eval_"):
            check_config(cfg)
            work, _, _ = work_items(cfg)
            n_judge = sum(k == "lbw" for k, _ in work) * cfg.judge_samples \
                if cfg.judge_enabled else 0
            found[name] = {"prompts": len(work), "max_new_tokens": cfg.max_new_tokens,
                           "output_tokens_at_most": len(work) * cfg.max_new_tokens,
                           "judge_calls": n_judge}
            print(f"[dry run] {name}: {len(work)} prompts x at most {cfg.max_new_tokens:,} new "
                  f"tokens = at most {len(work) * cfg.max_new_tokens:,} output tokens; "
                  f"{n_judge} judge calls")
        elif name in ("sft", "dpo"):
            found[name] = _training_figures(cfg, gen)
            print(f"[dry run] {name}: " + json.dumps(found[name]))
        else:
            found[name] = {"checked": True}
            print(f"[dry run] {name}: config checked; its input comes from the stage before")
    print(json.dumps({"dry_run": True, "stages": found}))
    return found


def _training_figures(cfg, gen: dict | None) -> dict:
    """What training will see per row, before curation decides how many rows: the generation
    estimate's answer tokens per row, the length limit, epochs."""
    out = {"max_length": cfg.max_length, "epochs": cfg.epochs, "num_workers": cfg.num_workers,
           "rows": "what curation keeps (not known before it runs)"}
    if gen and gen["to_generate"]:
        per_row = gen["output_tokens"] / gen["to_generate"]
        out["answer_tokens_per_row_expected"] = round(per_row)
        out["tokens_per_epoch_at_most"] = round(gen["to_generate"] * min(per_row, cfg.max_length))
    return out


def main(p: PipelineConfig) -> dict:
    init_ray()
    report = run_pipeline(p)
    keys = ("mean_words_2k_plus", "S_l", "S_q", "ruler_max_words")
    for side in ("base", "trained"):
        if report.get(side):
            print(f"{side}: " + json.dumps({k: report[side].get(k) for k in keys}))
    return report


CONFIG = PipelineConfig

if __name__ == "__main__":
    sys.exit(cli(CONFIG, main, description=__doc__, expected=(PipelineError,), dry_run=dry_run))
