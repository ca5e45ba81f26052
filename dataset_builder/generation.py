"""The AgentWrite generation job as Ray Data stages: read -> select -> engine stage -> sink.

    python -m ray_jobs.generate --config ray_jobs/configs/generate_demo.yaml

Input files are parsed in Ray tasks (instructions.parse_file); the driver sees only each row's
id, file, line, language and length to decide duplicates, earlier results, the length rules and
`limit`; the rows left go through the engine stage (llm/stage.py) as whole AgentWrite
instructions, and every row, written or rejected, lands through one Datasink (sink.py).

Output directory (any fsspec URI):
  generations/  parquet parts + _manifest.json (DESIGN.md §5 generation records, one per id)
  _rejects/     every dropped row with stage and reason (input line, selection, plan, write)
  _journal/     finished steps per instruction, one object each (resume state)
  _stats.json   funnel, tokens, prefix-cache hit rate, wall time, tokens/s per engine
  _config.yaml  the resolved config
"""
from __future__ import annotations

import json
import logging
import time
import uuid
import warnings
from dataclasses import dataclass

from dataset_builder import prompts, selection
from dataset_builder.agentwrite import (
    AgentWriteConfig,
    Journal,
    plan_max_tokens,
    plan_messages,
    run_instruction,
)
from dataset_builder.core import instructions as ins
from dataset_builder.core import progress, records, storage
from dataset_builder.core.config import check_least, code_version, config_hash, field, to_dict
from dataset_builder.core.records import ROW, reject_row
from dataset_builder.estimate import EstimateConfig
from dataset_builder.llm.base import EngineConfig, EngineError, Sampling
from dataset_builder.llm.batch_stats import fill
from dataset_builder.llm.render import ChatRenderer
from dataset_builder.llm.stage import engine_stage, engines_up
from dataset_builder.selection import SelectionConfig
from dataset_builder.sink import ManifestSink, Output, merge_commits

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    input: str = field(help="Instructions: a jsonl or parquet file, a directory of them or a "
        "glob; local path or s3:// URI.")
    output: str = field(help="Output directory (local path or s3:// URI).")
    limit: int | None = field(None, help="Send at most this many instructions to the engines "
        "(after the length rules; a row waiting for an LLM length estimate counts).")
    max_attempts: int = field(3, help="Starts of one instruction in one run (its engine "
        "replica died under it each time) before it is rejected as engine_lost.")
    commit_every: int = field(16, help="Rows per output part (Datasink min_rows_per_write): "
        "one write task each. Raise it when rows finish faster than a few write tasks per "
        "second can take them: finished rows then wait for the sink, and Ray keeps blocks "
        "under 100 KB in the driver's heap (benchmarks/scale.py: 128 at ~150 rows/s).")
    write_num_cpus: float = field(0.0, help="CPUs each write task asks Ray for. 0 by default: "
        "a write is a short parquet encode and upload, and a write task that needs a CPU waits "
        "for Ray Data's reservations to free one. On a small node they never do while the "
        "queue's sort is still feeding the engine stage (2 CPUs: the sort's reduce and the "
        "replica hold both), so at 1M instructions nothing was committed and the finished "
        "rows piled up in the driver's heap (docs/DESIGN.md §6, §13).")
    write_concurrency: int = field(2, help="Write tasks at once at most (0-CPU tasks are not "
        "bounded by the cluster's CPUs, so this is what bounds them).")
    retry_rejects: bool = field(False, help="Retry instructions rejected by an earlier run.")
    longest_first: bool = field(True, help="Send the instructions that ask for the most words "
        "first (those with no stated length before all others): a long instruction started "
        "last keeps one replica busy alone at the end of the job. False: input order.")
    progress: bool = field(True, help="Print a progress line every progress_interval_s: "
        "instructions done of those sent, rejects, write steps and words written of those "
        "planned, output tokens/s, ETA (core/progress.py).")
    progress_interval_s: float = field(30.0, help="Seconds between progress lines.")
    engine: EngineConfig = field(default_factory=EngineConfig, help="The LLM engine.")
    agentwrite: AgentWriteConfig = field(default_factory=AgentWriteConfig, help="AgentWrite.")
    selection: SelectionConfig = field(default_factory=SelectionConfig, help="Selection.")
    storage: storage.StorageConfig = field(default_factory=storage.StorageConfig, help="Storage.")
    estimate: EstimateConfig = field(default_factory=EstimateConfig, help="The dry run's "
        "assumptions and prices (--dry-run; dataset_builder/estimate.py).")

    def __post_init__(self):
        check_least(self, commit_every=1, write_concurrency=1, write_num_cpus=0)


class AgentWriteTask:
    """One instruction in an engine replica: the context check (the model's own tokenizer and
    chat template), the LLM length estimate when the prompt states none, then plan + write with
    the step journal; `max_attempts` starts in one run at most (the count is journaled)."""
    stage = "agentwrite"
    accepts = ("todo",)
    engine_key = "engine"

    def __init__(self, cfg: GenerateConfig, journal_uri: str, run_id: str):
        self.cfg, self.journal_uri, self.run_id = cfg, journal_uri, run_id
        self.render = None
        if cfg.engine.backend == "vllm":  # an openai endpoint's tokenizer is not known here
            from transformers import AutoTokenizer

            self.render = ChatRenderer(AutoTokenizer.from_pretrained(cfg.engine.model))

    def _too_long(self, item: dict) -> str | None:
        if self.render is None:
            return None
        n, room = len(self.render(plan_messages(item, self.cfg.agentwrite))), \
            plan_max_tokens(self.cfg.agentwrite)
        if n + room > self.cfg.engine.max_model_len:
            return (f"prompt_too_long: {n} tokens + {room} for the plan > "
                    f"max_model_len {self.cfg.engine.max_model_len}")
        return None

    async def _estimate(self, engine, item: dict) -> None:
        s = Sampling(temperature=0.0, max_tokens=8, regex=r"[1-9][0-9]{1,5}", kind="estimate",
                     row=item["id"])
        msgs = [{"role": "user", "content": prompts.ESTIMATE_PROMPT.format(
            instruction=item["prompt"])}]
        try:
            item["required_words"] = selection.parse_estimate((await engine.chat(msgs, s)).text)
        except EngineError:
            item["required_words"] = None
        item["required_words_source"] = "llm" if item["required_words"] else None

    async def run(self, engine, item: dict) -> dict:
        sel = self.cfg.selection
        reason = self._too_long(item)
        if reason is None and not item.get("required_words"):
            await self._estimate(engine, item)
            ok, reason = selection.keep(item, sel.min_required_words, sel.max_estimate_words,
                                        sel.languages)
        if reason:
            return {"status": "reject", "stage": "selection", "reason": reason}
        journal = Journal(self.journal_uri, item["id"], self.cfg.storage)
        n = journal.start_attempt(self.run_id)
        if n > self.cfg.max_attempts:
            log.warning("%s: started %d times in this run, its replica lost each time: rejected",
                        item["id"], n - 1)
            return {"status": "reject", "stage": "engine",
                    "reason": f"engine_lost_{self.cfg.max_attempts}_times"}
        if n > 1:
            log.info("%s: attempt %d, resuming from its journal", item["id"], n)
        res = await run_instruction(engine, item, self.cfg.agentwrite, self.journal_uri,
                                    self.cfg.storage, journal)
        return {**res, "attempt": n}


def _apply(batch, plan: dict):
    """Ray Data map_batches: each row as decided on the driver (`plan`: a "todo" row's rank in
    the engine stage's queue, else its decision); skipped rows drop out."""
    import pyarrow as pa

    out = []
    for row in batch.to_pylist():
        item = json.loads(row["payload"])
        d = plan[(item["file"], item["line"])]
        if isinstance(d, int) or d == "keep":
            out.append({**row, "rank": d if isinstance(d, int) else 0})
        elif d not in ("skip", "later"):
            out.append({**reject_row(item, *d), "rank": 0})
    return pa.Table.from_pylist(out, schema=ROW.append(pa.field("rank", pa.int64())))


def _plan(rows: list[dict], done: set, recorded: set, cfg: GenerateConfig) -> tuple[dict, dict]:
    """The driver's decisions in one dict, (file, line) -> rank in the engine stage's queue
    for a "todo" row, else its decision; and the counts the job reports. One dict, not the
    rows plus decisions plus ranks: it is what the driver holds (and ships to the _apply tasks)
    while the job runs (benchmarks/scale.py measures the driver's memory)."""
    decisions = selection.decide(rows, done, recorded, cfg.selection, cfg.limit)
    order = selection.send_order(rows, decisions, cfg.longest_first)
    counts = {"in": len(rows), "todo": len(order),
              "later": sum(d == "later" for d in decisions.values()),
              "rejects": sum(isinstance(d, tuple) for d in decisions.values()),  # dedup, selection
              "expected_words": _expected_words(rows, decisions, cfg)}
    decisions.update(order)
    return decisions, counts


def _read(cfg: GenerateConfig):
    import ray
    files = ins.input_files(cfg.input, cfg.storage)
    ds = ray.data.from_items([{"file": f} for f in files], override_num_blocks=len(files))
    return ds.flat_map(ins.parse_file, fn_kwargs={"storage_cfg": cfg.storage}).materialize()


def earlier(out: str, cfg: GenerateConfig) -> tuple[set, set]:
    """Ids finished or rejected by earlier runs (not retried unless retry_rejects), and the
    rejects already recorded (a rerun records none twice)."""
    # only the columns needed: a rerun of a large run must not read every answer's text
    gens = storage.read_dataset(storage.join(out, "generations"), cfg.storage, ["id"])
    done = set(gens.column("id").to_pylist()) if gens is not None and gens.num_rows else set()
    old = storage.read_dataset(storage.join(out, "_rejects"), cfg.storage,
                               ["id", "stage", "line", "file"])
    old = old.to_pylist() if old is not None else []   # zero rows: an empty list
    if not cfg.retry_rejects:
        done |= {r["id"] for r in old if r["id"] and r["stage"] not in ("input", "dedup")}
    return done, {(r["stage"], r["id"], r["line"], r["file"]) for r in old}


def run(cfg: GenerateConfig) -> dict:
    """Run the job on the connected Ray cluster; returns what `_stats.json` holds."""
    with engines_up(cfg.engine) as up_key:
        return _run(cfg, up_key)


def _run(cfg: GenerateConfig, up_key: str) -> dict:
    t0 = time.time()
    out = cfg.output.rstrip("/")
    storage.check_reachable(out, cfg.storage)
    ds = _read(cfg)
    storage.save_resolved_config(cfg, out, cfg.storage)
    gen_uri, rej_uri = storage.join(out, "generations"), storage.join(out, "_rejects")
    extra = {"config": to_dict(cfg), "config_hash": config_hash(cfg),
             "code_version": code_version("dataset_builder"), "backend": cfg.engine.backend}
    for uri, schema in ((gen_uri, records.GENERATION), (rej_uri, records.REJECT)):
        # parts a crashed run committed but did not list
        merge_commits(uri, cfg.storage, uri == gen_uri, extra if uri == gen_uri else None, schema)
    done, recorded = earlier(out, cfg)
    rows = ds.map(lambda r: {k: v for k, v in json.loads(r["payload"]).items() if k in (
        "id", "file", "line", "lang", "required_words", "required_words_source")}
        | {"status": r["status"]}).take_all()
    plan, n = _plan(rows, done, recorded, cfg)
    del rows  # the driver keeps only `plan` while the job runs
    n_todo = n["todo"]
    run_id = uuid.uuid4().hex[:12]  # names this run's parts and scopes its attempt counts
    ds = ds.map_batches(_apply, batch_format="pyarrow", fn_kwargs={"plan": plan})
    line = progress_line(n_todo, n["rejects"], n["expected_words"])
    with progress.Console("generate", cfg.progress, cfg.progress_interval_s, line) as con:
        if n_todo:  # no engine starts when nothing is left to generate
            task = {"cfg": cfg, "journal_uri": storage.join(out, "_journal"),
                    "run_id": run_id}
            from ray.data.expressions import col
            # sort: an all-to-all, cheap here (the input is materialized, rows are instructions)
            queue = ds.filter(expr=col("status") == "todo").sort("rank")
            ds = engine_stage(queue, cfg.engine, AgentWriteTask, task, up_key,
                              con.board, n_todo).union(
                ds.filter(expr=col("status") != "todo").drop_columns(["rank"]))
        else:
            ds = ds.drop_columns(["rank"])
        chash, model = config_hash(cfg), cfg.engine.label()
        sink = ManifestSink(
            {"ok": Output(gen_uri, records.GENERATION,
                          lambda i: {**i["record"], "model": model, "config_hash": chash}),
             "reject": Output(rej_uri, records.REJECT, records.reject_record,
                              unique_ids=False)},
            cfg.storage, run_id, cfg.commit_every, Stats, extra, con.board)
        # Ray Data warns when a run has fewer parts than write_concurrency (a small run)
        warnings.filterwarnings("ignore", "The maximum number of concurrent tasks for 'Write'")
        ds.write_datasink(sink, ray_remote_args={"num_cpus": cfg.write_num_cpus},
                          concurrency=cfg.write_concurrency)
    stats = sink.total
    total = (storage.load_manifest(gen_uri, cfg.storage) or {}).get("rows", 0)
    result = _stats_json(cfg, stats, n, time.time() - t0, total)
    result["commit_seconds"] = sink.commit_seconds
    storage.write_json(storage.join(out, "_stats.json"), result, cfg.storage)
    by_stage: dict[str, int] = {}
    for k, v in stats.reasons.items():
        by_stage[k.split(":")[0]] = by_stage.get(k.split(":")[0], 0) + v
    con.final(f"instructions {stats.c['written']}/{n_todo} written | rejected: "
              + (", ".join(f"{k} {v}" for k, v in sorted(by_stage.items())) or "none")
              + f" | {stats.c['output_tokens']:,} output tokens, "
              f"{result['output_tokens_per_s']:,.0f}/s | {progress.duration(result['wall_seconds'])}")
    return result


def _expected_words(rows: list[dict], decisions: dict, cfg: GenerateConfig) -> float:
    """Mean required words of the rows sent to the engines (a row whose length the LLM will
    estimate counts as the mean of the others; with none known, the selection minimum)."""
    known = [r["required_words"] for r in rows
             if decisions[(r["file"], r["line"])] == "todo" and r.get("required_words")]
    return sum(known) / len(known) if known else float(cfg.selection.min_required_words or 2000)


def progress_line(n_todo: int, n_selection_rejects: int, expected_words: float
                  ) -> progress.LineFn:
    """The generation's progress line. The ETA is made in words, since AgentWrite's work is
    its words (tokens) and rows differ tenfold: the words left are the planned words not yet
    written or dropped by a reject, plus the rows not planned yet at the mean planned words per
    row so far (before any plan: the required words the driver knows). They are divided by
    the words written per second so far (resumed steps cost nothing and do not count)."""
    def line(c: dict, g: dict, active_s: float) -> str:
        ok, rej = int(c.get("agentwrite_ok", 0)), int(c.get("agentwrite_reject", 0))
        planned = c.get("rows_planned", 0)
        per_row = c.get("words_planned", 0) / planned if planned else expected_words
        to_plan = max(n_todo - planned - c.get("rows_dropped", 0), 0)
        total = c.get("words_planned", 0) - c.get("words_dropped", 0) + to_plan * per_row
        written = c.get("words_done", 0) + c.get("words_resumed", 0)
        steps = int(c.get("steps_done", 0) + c.get("steps_resumed", 0))
        tok_s = c.get("agentwrite_output_tokens", 0) / active_s if active_s else 0.0
        return (f"instructions {ok + rej}/{n_todo} done, {rej + n_selection_rejects} rejected"
                f", {int(c.get('rows_committed', 0))} committed | write steps {steps}/"
                f"{int(c.get('steps_planned', 0))} planned | words {written:,.0f}/~{total:,.0f}"
                f" | {tok_s:,.0f} output tok/s | ETA "
                f"{progress.eta(total - written, c.get('words_done', 0), active_s)}")
    return line


class Stats:
    """The job's counts: each sink write task adds its rows (`add`) and returns this object,
    the driver merges them (`merge`); nothing per row reaches the driver."""

    def __init__(self):
        self.c = {"written": 0, "failed": 0, "step_prompt_tokens": 0,
                  "step_cached_tokens": 0, "write_prompt_tokens": 0, "write_cached_tokens": 0,
                  "output_tokens": 0, "resumed_steps": 0, "generated_steps": 0,
                  "response_words": 0}
        self.reasons: dict[str, int] = {}
        self.engines: dict[str, dict] = {}   # replica (node, pid) -> rows, output tokens, batch

    def add(self, item: dict, status: str) -> None:
        tokens = 0
        if status == "ok":
            tokens = self.record(item["record"])
        else:
            self.reject(item["stage"], item["reason"])
        if item.get("engine"):
            e = self.engines.setdefault(item["engine"], {"rows": 0, "output_tokens": 0,
                                                         "batch": None})
            e["rows"] += 1
            e["output_tokens"] += tokens
            _latest(e, item.get("engine_batch"))

    def record(self, rec: dict) -> int:
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
        return sum(rec["step_output_tokens"])

    def reject(self, stage: str, reason: str) -> None:
        if stage not in ("input", "dedup", "selection"):
            self.c["failed"] += 1
        key = f"{stage}: {reason.split(':')[0]}"
        self.reasons[key] = self.reasons.get(key, 0) + 1

    def merge(self, other: Stats) -> None:
        for k, v in other.c.items():
            self.c[k] += v
        for k, v in other.reasons.items():
            self.reasons[k] = self.reasons.get(k, 0) + v
        for k, o in other.engines.items():
            e = self.engines.setdefault(k, {"rows": 0, "output_tokens": 0, "batch": None})
            e["rows"] += o["rows"]
            e["output_tokens"] += o["output_tokens"]
            _latest(e, o["batch"])

    def engine_list(self, wall: float) -> list[dict]:
        """Per engine replica (node, pid): rows finished there and their output tokens; with
        engine.batch_stats, how full its batch was (the counters with the most engine steps
        that a row brought back)."""
        return [{**json.loads(k), "rows": e["rows"], "output_tokens": e["output_tokens"],
                 "output_tokens_per_s": e["output_tokens"] / max(wall, 1e-9),
                 **(fill({}, e["batch"]) if e["batch"] else {})}
                for k, e in self.engines.items()]


def _latest(e: dict, batch: dict | None) -> None:
    if batch and batch["steps"] > (e["batch"] or {"steps": -1})["steps"]:
        e["batch"] = batch


def _stats_json(cfg, stats, n: dict, wall, total_rows) -> dict:
    c = stats.c
    return {
        "instructions_in": n["in"],
        "selected": n["todo"] + n["later"],
        "scheduled_this_run": n["todo"],
        "planned_this_run": c["written"] + sum(v for k, v in stats.reasons.items()
                                               if k.startswith("write_step")),
        "written_this_run": c["written"], "failed": c["failed"],
        "rows_in_output": total_rows, "rejects_by_reason": stats.reasons,
        "mean_response_words": c["response_words"] / max(c["written"], 1),
        "output_tokens": c["output_tokens"], "prompt_tokens": c["step_prompt_tokens"],
        "prefix_hit_rate": c["step_cached_tokens"] / max(c["step_prompt_tokens"], 1),
        "prefix_hit_rate_write_steps": c["write_cached_tokens"] / max(c["write_prompt_tokens"], 1),
        "generated_steps": c["generated_steps"], "resumed_steps": c["resumed_steps"],
        "wall_seconds": round(wall, 2), "output_tokens_per_s": c["output_tokens"] / max(wall, 1e-9),
        "engines": stats.engine_list(wall),
        "layout": cfg.agentwrite.layout, "model": cfg.engine.label(),
        "backend": cfg.engine.backend,
    }
