"""The pairs job: long-writing instructions -> k sampled answers each -> S_q (judge) and S_l ->
preference pairs (chosen, rejected) for DPO, with rejects, coverage and a report.

Sampling and scoring are the evaluation's own machinery (`eval.evaluate.run_eval` on custom
items: the sampling and judge engine pools, `max_tokens` capped by the context, per-sample seeds, the judge with its
cache, retries and recorded failures, S_l as published), into `<output>/scores/`; a rerun
reuses every stored sample and cached judgement. The pair rules are `train.pair_rules`. Prompts of
LongBench-Write (normalized text, or a shared 13-gram) are refused, so the benchmark stays
clean. Run it with `python -m ray_jobs.pairs`.
"""
from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from dataset_builder.core import instructions, records, storage
from dataset_builder.core.config import config_hash, field, to_dict
from dataset_builder.core.stats import describe
from eval.config import EvalConfig
from eval.contamination import BenchmarkIndex
from eval.evaluate import run_eval
from train.pair_rules import PairRules, combined, make_pair

PAIR = pa.schema([
    ("id", pa.string()), ("prompt", pa.list_(records.MESSAGE)), ("chosen", pa.list_(records.MESSAGE)),
    ("rejected", pa.list_(records.MESSAGE)), ("lang", pa.string()), ("required_words", pa.int64()),
    *[(f"{side}_{k}", t) for side in ("chosen", "rejected") for k, t in (
        ("s_q", pa.float64()), ("s_l", pa.float64()), ("score", pa.float64()),
        ("words", pa.int64()))],
    ("samples", pa.int64()), ("model", pa.string()),
])


def _default_scoring() -> EvalConfig:
    return EvalConfig(ruler=False, temperature=0.8, top_p=0.95)


@dataclass
class PairsConfig:
    model: str = field(help="The model that writes the answers (the SFT export), vllm backend; "
                       "or the endpoint's model name with scoring.engine.backend=openai.")
    data: str = field(help="Instructions: jsonl or parquet with `prompt` (and optional "
                      "`required_words`, `id`, `lang`), local or s3://.")
    output: str = field(help="Output directory: pairs (part-*.parquet + _manifest.json), "
                        "_rejects/, report.md/json, lengths.png, scores/ (samples, judgements).")
    samples: int = field(4, help="Answers sampled per instruction (the paper: 4).")
    limit: int = field(0, help="Use only the first N usable instructions (0 = all).")
    rules: PairRules = field(default_factory=PairRules, help="Combined score and pair rules.")
    scoring: EvalConfig = field(default_factory=_default_scoring, help="Sampling and judging: "
        "the evaluation's settings (engine, judge, temperature, top_p, max_new_tokens, judge "
        "constraint...). engine.model and output are set from this job.")
    storage: storage.StorageConfig = field(default_factory=storage.StorageConfig,
                                           help="Object-store settings.")


def _instructions(cfg: PairsConfig) -> tuple[list[dict], list[dict]]:
    """Usable instructions and input rejects (file, line, reason)."""
    rows, rejects = instructions.read_instructions(cfg.data, cfg.storage)
    bench, kept = BenchmarkIndex.load(), []
    for r in instructions.assign_required(rows):
        why = bench.check(r["prompt"]) or (None if r["required_words"] else
                                           "required_words_unknown: no length given or stated")
        if why:
            rejects.append(records.reject_record({**r, "stage": "input", "reason": why}))
        else:
            kept.append(r)
    for r in rejects:
        r["file"] = cfg.data
    return (kept[:cfg.limit] if cfg.limit else kept), rejects


def _side(answer: dict) -> dict:
    return {"s_q": answer["s_q"], "s_l": answer["s_l"], "score": answer["score"],
            "words": answer["output_length"]}


def pair_rows(groups: dict[str, list[dict]], insts: dict[str, dict], cfg: PairsConfig
              ) -> tuple[list[dict], list[dict]]:
    """(pair records, drop rejects) from scored samples grouped by instruction id."""
    pairs, drops = [], []
    for gid, answers in groups.items():
        inst = insts[gid]
        usable = [a if a.get("response") else {**a, "s_q": None} for a in answers]
        pair, why = make_pair(gid, usable, cfg.rules)
        if pair is None:
            drops.append({"id": gid, "line": inst["line"], "stage": "pair", "reason": why,
                          "raw": inst["prompt"][:2000], "file": cfg.data})
            continue
        chosen, rejected = pair
        row = {"id": gid, "prompt": [{"role": "user", "content": inst["prompt"]}],
               "chosen": [{"role": "assistant", "content": chosen["response"]}],
               "rejected": [{"role": "assistant", "content": rejected["response"]}],
               "lang": inst["lang"], "required_words": inst["required_words"],
               "samples": len(answers), "model": cfg.model}
        for side, a in (("chosen", chosen), ("rejected", rejected)):
            row.update({f"{side}_{k}": v for k, v in _side(a).items()})
        pairs.append(row)
    return pairs, drops


def run_pairs(cfg: PairsConfig) -> dict:
    """The whole job on the connected Ray cluster (sampling and judging pools as in
    evaluation; `attach` in scoring.engine / scoring.judge reuses running engines). Returns
    the report."""

    out = cfg.output.rstrip("/")
    insts, rejects = _instructions(cfg)
    by_id = {r["id"]: r for r in insts}
    items = [{"id": f"{r['id']}-s{k}", "group": r["id"], "prompt": r["prompt"],
              "lang": r["lang"], "required_length": r["required_words"], "line": r["line"]}
             for r in insts for k in range(cfg.samples)]
    scfg = cfg.scoring
    scfg.engine.model, scfg.output, scfg.storage = cfg.model, f"{out}/scores", cfg.storage
    results = run_eval(scfg, items=items) if items else None
    scored = storage.read_jsonl(f"{out}/scores/samples.jsonl", cfg.storage) if items else []
    groups: dict[str, list[dict]] = {}
    for s in scored:
        groups.setdefault(s["group"], []).append(s)
    pairs, drops = pair_rows(groups, by_id, cfg)
    report = _report(cfg, scored, pairs, rejects + drops, results)
    _write(cfg, pairs, rejects + drops, report)
    return report


def _write(cfg: PairsConfig, pairs: list[dict], rejects: list[dict], report: dict) -> None:
    out, scfg = cfg.output.rstrip("/"), cfg.storage
    storage.reset_dataset(out, scfg)  # a rerun replaces the pairs (scores and judgements are reused)
    extra = {"config": to_dict(cfg), "config_hash": config_hash(cfg)}
    writer = storage.DatasetWriter(out, scfg, extra)
    writer.write(pairs, PAIR)   # zero pairs still commit PAIR's columns
    rej = storage.DatasetWriter(storage.join(out, "_rejects"), scfg, extra)
    rej.write(rejects, records.REJECT)
    rej.commit()
    storage.write_json(storage.join(out, "report.json"), report, scfg)
    storage.write_bytes_atomic(storage.join(out, "lengths.png"), _plot(pairs), scfg)
    storage.write_bytes_atomic(storage.join(out, "report.md"), _markdown(report).encode(), scfg)
    writer.commit(rows_rejected=len(rejects))


def _report(cfg, scored, pairs, rejects, results) -> dict:
    scores = [combined(s, cfg.rules) for s in scored]
    cov = (results or {}).get("coverage", {})
    return {
        "instructions": len({s["group"] for s in scored}), "samples": len(scored),
        "pairs": len(pairs), "dropped": dict(Counter(r["reason"].split(":")[0]
                                                     for r in rejects)),
        "coverage": {k: cov.get(k) for k in ("items", "generated", "generation_failed",
                                             "judged", "judge_coverage",
                                             "judge_failure_reasons")},
        "combined_score": describe([s for s in scores if s is not None]),
        "s_q": describe([s["s_q"] for s in scored if s.get("s_q") is not None]),
        "s_l": describe([s["s_l"] for s in scored if s.get("s_l") is not None]),
        "chosen_words": describe([p["chosen_words"] for p in pairs]),
        "rejected_words": describe([p["rejected_words"] for p in pairs]),
        "rules": to_dict(cfg.rules), "model": cfg.model, "judge": cfg.scoring.judge.model,
    }


def _plot(pairs: list[dict]) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 5))
    if pairs:
        ax.scatter([p["rejected_words"] for p in pairs], [p["chosen_words"] for p in pairs],
                   alpha=0.5)
        top = max(max(p["rejected_words"], p["chosen_words"]) for p in pairs) or 1
        ax.plot([0, top], [0, top], "k--", linewidth=1, label="y = x")
        ax.legend()
    ax.set_xlabel("rejected answer (words)")
    ax.set_ylabel("chosen answer (words)")
    ax.set_title(f"Preference pairs: chosen vs rejected length (n={len(pairs)})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _markdown(r: dict) -> str:
    lines = ["# Preference pairs", "",
             f"{r['instructions']} instructions, {r['samples']} samples, {r['pairs']} pairs "
             f"(model {r['model']}, judge {r['judge']}).", "",
             "| | n | mean | min | median | max |", "|---|---|---|---|---|---|"]
    for k in ("combined_score", "s_q", "s_l", "chosen_words", "rejected_words"):
        s = r[k]
        lines.append(f"| {k} | {s['count']} | " + " | ".join(str(s.get(x, "-")) for x in (
            "mean", "min", "median", "max")) + " |")
    lines += ["", "Dropped: " + (", ".join(f"{k} {v}" for k, v in r["dropped"].items())
                                 or "none"),
              "", "Coverage: " + ", ".join(f"{k} {v}" for k, v in r["coverage"].items()),
              "", "![lengths](lengths.png)", ""]
    return "\n".join(lines)
