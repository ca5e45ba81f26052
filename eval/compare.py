"""The pipeline's before/after report: the base model against the trained one on LongBench-Write
and LongWrite-Ruler, plus each stage's wall time, throughput and drop counts.

Reads what the evaluation jobs wrote (results.json, samples.jsonl, ruler.jsonl in each eval
directory) and the pipeline's `_pipeline.json`; writes report.md, report.json and two PNGs
(ruler curves on one log-log chart with y = x; output-length histograms) into the pipeline
directory. report.json's `base` and `trained` objects carry at least mean_words_2k_plus,
S_l, S_q and ruler_max_words.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from dataset_builder.core import storage
from eval.report import _fmt, _loglog_identity, _png
from eval.scoring import BUCKETS, length_bucket

PLOTS = {"ruler": "ruler_before_after.png", "hist": "lengths_before_after.png"}
SIDES = (("base", "eval_base"), ("sft", "eval_sft"), ("dpo", "eval_dpo"))


def _mean(v: list[float]) -> float | None:
    return sum(v) / len(v) if v else None


def side_summary(results: dict, samples: list[dict]) -> dict:
    """One model's figures: scores with CIs, mean output words on 2k+ requests and per bucket,
    the ruler's maximum and curve."""
    o, ruler = results["overall"], results.get("ruler") or {}
    done = [s for s in samples if s.get("output_length") is not None]
    long = [s["output_length"] for s in done if s["required_length"] >= 2000]
    buckets = {}
    for name, *_ in BUCKETS:
        sel = [s["output_length"] for s in done if length_bucket(s["required_length"]) == name]
        if sel:
            buckets[name] = {"n": len(sel), "mean_words": _mean(sel)}
    return {
        "model": results["protocol"]["model"],
        "S": o["S"], "S_ci95": o["S_ci95"], "S_l": o["S_l"], "S_l_ci95": o["S_l_ci95"],
        "S_q": o["S_q"], "S_q_ci95": o["S_q_ci95"], "n": o["n"], "n_judged": o["n_judged"],
        "mean_words_2k_plus": _mean(long), "n_2k_plus": len(long),
        "mean_words_by_bucket": buckets,
        "ruler_max_words": ruler.get("max_output_length"),
        "ruler_curve": {k: v["mean_output"] for k, v in (ruler.get("per_length") or {}).items()},
    }


def _load(eval_dir: str, cfg) -> tuple[dict, list[dict]] | None:
    res = storage.join(eval_dir, "results.json")
    if not storage.exists(res, cfg):
        return None
    return storage.read_json(res, cfg), storage.read_jsonl(storage.join(eval_dir,
                                                                        "samples.jsonl"), cfg)


def ruler_plot(sides: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 6))
    hi = 10.0
    for name, s in sides.items():
        pts = sorted((int(k), max(1.0, v)) for k, v in s["ruler_curve"].items())
        if pts:
            ax.plot(*zip(*pts), "o-", label=f"{name} (max {s['ruler_max_words']})")
            hi = max(hi, *(max(x, y) for x, y in pts))
    _loglog_identity(ax, 100, hi * 1.5)
    ax.set_xlabel("Required length (LongWrite-Ruler)")
    ax.set_ylabel("Mean output length")
    ax.set_title("Output length before and after training")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return _png(fig)


def hist_plot(lengths: dict[str, list[int]]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4))
    top = max([10] + [max(v) for v in lengths.values() if v])
    bins = [0, *(10 ** (i / 4) for i in range(4, int(4 * math.log10(top)) + 2))]
    for name, v in lengths.items():
        ax.hist(v, bins=bins, alpha=0.5, label=f"{name} (n={len(v)})")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("Output length on LongBench-Write (words)")
    ax.set_ylabel("Responses")
    ax.legend()
    fig.tight_layout()
    return _png(fig)


def render_markdown(report: dict) -> str:
    sides = {k: report[k] for k in ("base", "sft", "dpo") if report.get(k)}
    L = ["# LongWriter in miniature: before and after", "",
         "| | " + " | ".join(sides) + " |", "|---|" + "---|" * len(sides)]
    for key, label in (("model", "model"), ("S", "S"), ("S_l", "S_l"), ("S_q", "S_q"),
                       ("mean_words_2k_plus", "mean output words, requests >= 2,000"),
                       ("ruler_max_words", "LongWrite-Ruler max output words")):
        cells = [str(s[key]) if key in ("model", "ruler_max_words") else
                 _fmt(s[key], s.get(f"{key}_ci95")) for s in sides.values()]
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    for name, *_ in BUCKETS:
        cells = [_fmt((s["mean_words_by_bucket"].get(name) or {}).get("mean_words"))
                 for s in sides.values()]
        L.append(f"| mean output words, required {name} | " + " | ".join(cells) + " |")
    L += ["", "95% bootstrap CIs in brackets.", ""]
    if report.get("change"):
        L += ["Change: " + ", ".join(f"{k} {v}" for k, v in report["change"].items()), ""]
    L += [f"![ruler]({PLOTS['ruler']})", "", f"![lengths]({PLOTS['hist']})", "",
          "## Stages", "", "| stage | wall s | figures |", "|---|---|---|"]
    for name, st in report["stages"].items():
        figs = ", ".join(f"{k} {round(v, 3) if isinstance(v, float) else v}"
                         for k, v in (st.get("summary") or {}).items()
                         if v is not None and not isinstance(v, dict))
        L.append(f"| {name} | {st.get('wall_s')} | {figs} |")
    L += ["", "## Dropped instructions and rows", ""]
    for stage, reasons in report["dropped"].items():
        L.append(f"- {stage}: " + (", ".join(f"{r} {n}" for r, n in reasons.items()) or "none"))
    return "\n".join(L) + "\n"


def write_pipeline_report(out: str, state: dict, cfg=None) -> dict:
    """report.md/json + PNGs under `out` from the pipeline state and the eval directories."""
    sides, lengths = {}, {}
    stages = {k: dict(v) for k, v in state["stages"].items()}
    for side, stage in SIDES:
        loaded = _load(storage.join(out, stage), cfg)
        if loaded:
            sides[side] = side_summary(*loaded)
            lengths[side] = [s["output_length"] for s in loaded[1]
                             if s.get("output_length") is not None]
            if stage in stages:  # generation throughput over the stage's wall time
                summ = stages[stage].get("summary", {})
                # this run's generations only (a resumed run reuses stored ones); older
                # summaries lack the count: every stored sample then
                tokens = summ.get("output_tokens_generated")
                if tokens is None:
                    ruler = storage.join(out, stage, "ruler.jsonl")
                    recs = loaded[1] + (storage.read_jsonl(ruler, cfg)
                                        if storage.exists(ruler, cfg) else [])
                    tokens = sum(r.get("output_tokens") or 0 for r in recs)
                stages[stage]["summary"] = {**summ,
                                            "output_tokens": tokens, "output_tokens_per_s":
                                            round(tokens / max(stages[stage]["wall_s"], 1e-9), 1)}
    dropped = {}
    for stage in ("generate", "curate", "pairs"):
        summ = (state["stages"].get(stage) or {}).get("summary") or {}
        dropped[stage] = summ.get("rejects_by_reason") or {}
    trained = sides.get("dpo") or sides.get("sft")   # the last trained model
    if trained:
        sides = {"base": sides["base"], **{k: v for k, v in sides.items() if k != "base"},
                 "trained": trained} if "base" in sides else {**sides, "trained": trained}
    report = {**sides, "stages": stages, "dropped": dropped}
    if "base" in sides and "trained" in sides:
        b, t = sides["base"], sides["trained"]
        report["change"] = {
            "mean_words_2k_plus_ratio": round(t["mean_words_2k_plus"] / b["mean_words_2k_plus"], 2)
            if b["mean_words_2k_plus"] and t["mean_words_2k_plus"] is not None else None,
            "S_l_points": round(t["S_l"] - b["S_l"], 1) if None not in (t["S_l"], b["S_l"]) else None,
            "S_q_points": round(t["S_q"] - b["S_q"], 1) if None not in (t["S_q"], b["S_q"]) else None}
    if sides:
        named = {k: v for k, v in sides.items() if k != "trained"}
        storage.write_bytes_atomic(storage.join(out, PLOTS["ruler"]), ruler_plot(named), cfg)
        storage.write_bytes_atomic(storage.join(out, PLOTS["hist"]), hist_plot(lengths), cfg)
    storage.write_json(storage.join(out, "report.json"), report, cfg)
    storage.write_bytes_atomic(storage.join(out, "report.md"),
                               render_markdown(report).encode("utf-8"), cfg)
    return report
