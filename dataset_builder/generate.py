"""The AgentWrite generation job: instructions -> selection -> plan + write -> generation shards.

    python ray_jobs/generate.py --config ray_jobs/configs/demo.yaml

Output directory (any fsspec URI):
  generations/  parquet parts + _manifest.json (DESIGN.md §5 generation records, one per id)
  _rejects/     every dropped row with stage and reason (input line, selection, plan, write)
  _journal/     finished steps per instruction (resume state)
  _stats.json   funnel, tokens, prefix-cache hit rate, wall time, tokens/s per engine
  _config.yaml  the resolved config
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import ray
from tqdm import tqdm

from dataset_builder import instructions as ins
from dataset_builder import prompts, records, selection, storage
from dataset_builder.agentwrite import AgentWriteConfig
from dataset_builder.config import config_hash, field, to_dict
from dataset_builder.jobs import code_version
from dataset_builder.llm.actor import start_engines
from dataset_builder.llm.base import EngineConfig, Sampling
from dataset_builder.pool import run_pool


@dataclass
class SelectionConfig:
    min_required_words: int = field(2000, help="Keep instructions whose answer needs at least "
        "this many words (the paper: 2,000). 0 keeps everything.")
    llm_estimate: bool = field(True, help="Ask the engine for a length estimate when the prompt "
        "states none (digits-only regex constraint); otherwise such rows are rejected.")
    max_estimate_words: int = field(32000, help="An LLM estimate above this is implausible (a "
        "small model said 123,456 words for a one-line translation) and the row is rejected as "
        "`estimate_out_of_range`; LongWriter-6k outputs reach 32k words.")
    languages: list[str] = field(default_factory=list, help="Instruction languages to generate "
        "(e.g. [en]); others are rejected as `language_not_generated` before any engine call. "
        "Empty: all. A model that cannot write Chinese (the 135M demo model) only makes "
        "rows that curation drops as language_mismatch.")


@dataclass
class GenerateConfig:
    input: str = field(help="Instructions: jsonl or parquet, local path or s3:// URI.")
    output: str = field(help="Output directory (local path or s3:// URI).")
    limit: int | None = field(None, help="Process at most this many instructions (after "
        "selection).")
    num_engines: int = field(1, help="Engine actors (one model replica each; spread over nodes).")
    in_flight: int = field(64, help="Instructions in flight per engine actor (keep >= the "
        "engine's max_num_seqs so its batch stays full).")
    max_attempts: int = field(3, help="Attempts per instruction when its actor dies.")
    commit_every: int = field(16, help="Commit a parquet part every N finished instructions.")
    retry_rejects: bool = field(False, help="Retry instructions rejected by an earlier run.")
    progress: bool = field(True, help="Show a progress bar.")
    curate: bool = field(False, help="Run curation on the generations afterwards "
        "(into <output>/longwriter).")
    curate_config: str = field("ray_jobs/configs/curate.yaml", help="Curation config file "
        "used when curate is true (input/output/storage are set from this job).")
    curate_set: list[str] = field(default_factory=list, help="Overrides for the curation "
        "config, as with --set (e.g. filters.min_response_words=500).")
    engine: EngineConfig = field(default_factory=EngineConfig, help="The LLM engine.")
    agentwrite: AgentWriteConfig = field(default_factory=AgentWriteConfig, help="AgentWrite.")
    selection: SelectionConfig = field(default_factory=SelectionConfig, help="Selection.")
    storage: storage.StorageConfig = field(default_factory=storage.StorageConfig, help="Storage.")


def _estimate_lengths(actors, rows: list[dict]) -> None:
    """LLM estimate of required_words for rows without a stated length, spread over actors."""
    todo = [r for r in rows if not r.get("required_words")]
    s = Sampling(temperature=0.0, max_tokens=8, regex=r"[1-9][0-9]{1,5}")
    refs = [actors[i % len(actors)].chat.remote(
        [{"role": "user", "content": prompts.ESTIMATE_PROMPT.format(instruction=r["prompt"])}], s)
        for i, r in enumerate(todo)]
    for r, c in zip(todo, ray.get(refs)):
        r["required_words"] = selection.parse_estimate(c.text)
        r["required_words_source"] = "llm" if r["required_words"] else None


def _over_context(cfg: GenerateConfig, rows: list[dict]) -> dict[str, str]:
    """{id: reason} for rows whose plan request cannot fit the context with room for the plan,
    counted with the model's own tokenizer and chat template before any engine call (the vllm
    backend; an openai endpoint's tokenizer is not known here, so it reports these itself)."""
    if cfg.engine.backend != "vllm" or not rows:
        return {}
    from transformers import AutoTokenizer

    from dataset_builder.agentwrite import plan_max_tokens, plan_messages
    from dataset_builder.llm.render import ChatRenderer
    render = ChatRenderer(AutoTokenizer.from_pretrained(cfg.engine.model))
    room, limit = plan_max_tokens(cfg.agentwrite), cfg.engine.max_model_len
    out = {}
    for r in rows:
        n = len(render(plan_messages(r, cfg.agentwrite)))
        if n + room > limit:
            out[r["id"]] = (f"prompt_too_long: {n} tokens + {room} for the plan > "
                            f"max_model_len {limit}")
    return out


def _select(cfg: GenerateConfig, actors, rows: list[dict], rejects: list[dict]) -> list[dict]:
    """Rows already through selection.assign_required: language, context, LLM estimates, then
    the length rules."""
    langs = cfg.selection.languages
    too_long = _over_context(cfg, [r for r in rows if not langs or r["lang"] in langs])
    if cfg.selection.llm_estimate:  # no engine call for rows rejected anyway
        _estimate_lengths(actors, [r for r in rows if (not langs or r["lang"] in langs)
                                   and r["id"] not in too_long])
    kept = []
    for r in rows:
        ok, reason = selection.keep(r, cfg.selection.min_required_words,
                                    cfg.selection.max_estimate_words, langs)
        if ok and r["id"] in too_long:
            ok, reason = False, too_long[r["id"]]
        kept.append(r) if ok else rejects.append({"id": r["id"], "line": r["line"],
                                                  "stage": "selection", "reason": reason,
                                                  "raw": r["prompt"][:2000]})
    return kept


class Stats:
    def __init__(self):
        self.c = {"written": 0, "failed": 0, "duplicates_ignored": 0, "step_prompt_tokens": 0,
                  "step_cached_tokens": 0, "write_prompt_tokens": 0, "write_cached_tokens": 0,
                  "output_tokens": 0, "resumed_steps": 0, "generated_steps": 0,
                  "response_words": 0}
        self.reasons: dict[str, int] = {}

    def record(self, rec: dict) -> None:
        c, r = self.c, rec["resumed_steps"]
        c["written"] += 1
        c["resumed_steps"] += r
        c["generated_steps"] += len(rec["paragraphs"]) + 1 - r  # plan + write steps
        c["step_prompt_tokens"] += sum(rec["step_prompt_tokens"])
        c["step_cached_tokens"] += sum(rec["step_cached_tokens"])
        c["write_prompt_tokens"] += sum(rec["step_prompt_tokens"][1:])
        c["write_cached_tokens"] += sum(rec["step_cached_tokens"][1:])
        c["output_tokens"] += sum(rec["step_output_tokens"])
        c["response_words"] += rec["response_words"]

    def reject(self, stage: str, reason: str) -> None:
        key = f"{stage}: {reason.split(':')[0]}"
        self.reasons[key] = self.reasons.get(key, 0) + 1


def _write_rejects(cfg, out: str, rejects: list[dict], old: list[dict]) -> None:
    """Append rejects not already recorded (same stage, id, line): reruns add no duplicates."""
    uri = storage.join(out, "_rejects")
    seen = {(r["stage"], r["id"], r["line"]) for r in old}
    new = [r for r in rejects if (r["stage"], r.get("id"), r.get("line")) not in seen]
    w = storage.DatasetWriter(uri, cfg.storage)
    rows = [{**{k: r.get(k) for k in records.REJECT.names}, "file": r.get("file") or cfg.input}
            for r in new]
    if w.write(rows, records.REJECT):
        w.commit()


def run(cfg: GenerateConfig, actors: list | None = None) -> dict:
    """Run the job; `actors` reuses running EngineActors (tests) instead of starting new ones."""
    t0 = time.time()
    out = cfg.output.rstrip("/")
    storage.check_reachable(out, cfg.storage)
    rows, rejects = ins.read_instructions(cfg.input, cfg.storage)
    for r in rejects:
        r.update(stage="input", id=None)
    n_in = len(rows) + len(rejects)
    rows, dups = ins.drop_exact_duplicates(rows)
    rejects += [{**d, "stage": "dedup", "id": None} for d in dups]
    from dataset_builder.jobs import save_resolved_config
    save_resolved_config(cfg, out, cfg.storage)

    gen_uri = storage.join(out, "generations")
    writer = storage.DatasetWriter(gen_uri, cfg.storage, extra={
        "config": to_dict(cfg), "config_hash": config_hash(cfg), "code_version": code_version("dataset_builder")})
    done = set(storage.read_dataset(gen_uri, cfg.storage).column("id").to_pylist()
               if writer.manifest["files"] else [])
    old_table = storage.read_dataset(storage.join(out, "_rejects"), cfg.storage)
    old_rejects = old_table.to_pylist() if old_table is not None else []
    if not cfg.retry_rejects:
        done |= {r["id"] for r in old_rejects if r["id"] and r["stage"] not in ("input", "dedup")}
    # Finished and rejected rows are not selected again, and engines start only when a
    # pending row may need one (a rerun with nothing left to do took ~50 s for nothing).
    pending = selection.assign_required([r for r in rows if r["id"] not in done])
    own = actors is None
    if own:
        langs = cfg.selection.languages
        needs = any((not langs or r["lang"] in langs)
                    and ((r["required_words"] or 0) >= cfg.selection.min_required_words
                         or (cfg.selection.llm_estimate and not r["required_words"]))
                    for r in pending)
        actors = start_engines(cfg.engine, cfg.num_engines) if needs else []
    selected = _select(cfg, actors, pending, rejects)
    todo = selected[: cfg.limit]
    line_of = {r["id"]: r for r in todo}  # plan/write rejects keep their input line
    stats = Stats()
    for r in rejects:
        stats.reject(r["stage"], r["reason"])
    chash, model = config_hash(cfg), cfg.engine.model
    journal = storage.join(out, "_journal")
    buf: list[dict] = []
    bar = tqdm(total=len(todo), disable=not cfg.progress, unit="instr", desc="agentwrite")
    for res in run_pool(actors, todo, journal, cfg.agentwrite, cfg.storage, cfg.in_flight,
                        cfg.max_attempts):
        if res["status"] == "reject":
            stats.c["failed"] += 1
            stats.reject(res["stage"], res["reason"])
            src = line_of.get(res["id"], {})
            rejects.append({"id": res["id"], "line": src.get("line"), "stage": res["stage"],
                            "reason": res["reason"], "raw": (src.get("prompt") or "")[:2000]})
        elif res["record"]["id"] in done:
            stats.c["duplicates_ignored"] += 1
            continue
        else:
            rec = {**res["record"], "model": model, "config_hash": chash}
            done.add(rec["id"])
            stats.record(rec)
            buf.append(rec)
            if len(buf) >= cfg.commit_every:
                writer.write(buf, records.GENERATION)
                writer.commit()
                buf = []
        bar.update(1)
        bar.set_postfix(tok_s=f"{stats.c['output_tokens'] / max(time.time() - t0, 1e-9):.0f}")
    bar.close()
    if buf:
        writer.write(buf, records.GENERATION)
    writer.commit()
    _write_rejects(cfg, out, rejects, old_rejects)
    engines = ray.get([a.metrics.remote() for a in actors])
    result = _stats_json(cfg, stats, n_in, len(rows), len(selected), len(todo), engines,
                         time.time() - t0, writer.manifest["rows"])
    storage.write_json(storage.join(out, "_stats.json"), result, cfg.storage)
    for a in actors if own else []:
        ray.kill(a)
    return result


def _stats_json(cfg, stats, n_in, n_valid, n_selected, n_todo, engines, wall, total_rows) -> dict:
    c = stats.c
    return {
        "instructions_in": n_in, "valid": n_valid, "selected": n_selected,
        "scheduled_this_run": n_todo,
        "planned_this_run": c["written"] + sum(v for k, v in stats.reasons.items()
                                               if k.startswith("write_step")),
        "written_this_run": c["written"], "failed": c["failed"],
        "rows_in_output": total_rows, "rejects_by_reason": stats.reasons,
        "mean_response_words": c["response_words"] / max(c["written"], 1),
        "output_tokens": c["output_tokens"], "prompt_tokens": c["step_prompt_tokens"],
        "prefix_hit_rate": c["step_cached_tokens"] / max(c["step_prompt_tokens"], 1),
        "prefix_hit_rate_write_steps": c["write_cached_tokens"] / max(c["write_prompt_tokens"], 1),
        "generated_steps": c["generated_steps"], "resumed_steps": c["resumed_steps"],
        "duplicates_ignored": c["duplicates_ignored"],
        "wall_seconds": round(wall, 2), "output_tokens_per_s": c["output_tokens"] / max(wall, 1e-9),
        "engines": [{**m, "output_tokens_per_s": m["output_tokens"] / max(wall, 1e-9)}
                    for m in engines],
        "layout": cfg.agentwrite.layout, "model": cfg.engine.model,
    }
