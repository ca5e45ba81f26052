"""The length sweep's measures and report (the paper's Section 2 / Figure 2): one model per SFT
length cap, each evaluated on the same prompts; how long each writes against how long it was
asked to write.

Pure functions over each arm's samples (`arm_samples`: the evaluation's outputs cut to what the
report needs), so the report can be rebuilt from the committed per-arm results alone:
    arm_samples(eval_dir)          -> [{id, kind, required_length, words, finish_reason, ...}]
    arm_metrics(samples, cap, ...) -> the arm's figures, with bootstrap 95% intervals
    write_report(results_dir)      -> report.json, report.md, length_sweep.png
"""
from __future__ import annotations

import io
import json
import math
import statistics
from pathlib import Path

import numpy as np

from dataset_builder.core import storage
from dataset_builder.core.text import count_words, length_score

HEAD_WORDS = 500          # distinct 4-grams over the first 500 words: long and short compare
KEEP_WORDS = 600          # words of each output kept in the committed results
LONG = 2000               # "requests of 2,000+ words" (LongBench-Write's long buckets)


def distinct_4gram(text: str, head_words: int = HEAD_WORDS) -> float | None:
    """Distinct word 4-grams / all word 4-grams in the first `head_words` words (lowercased);
    None for a text of fewer than 4 words. A looping answer scores near 0, prose near 1."""
    words = text.lower().split()[:head_words]
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    return len(set(grams)) / len(grams) if grams else None


def _sample(rec: dict, kind: str, mode: str) -> dict:
    text = rec.get("response") or ""
    ok = rec.get("status") == "ok"
    return {"id": rec["id"], "kind": kind, "prompt": rec.get("prompt", "")[:300],
            "required_length": int(rec["required_length"]), "ok": ok,
            "words": count_words(text, mode) if ok else 0,
            "finish_reason": rec.get("finish_reason") if ok else "error",
            "distinct_4gram": distinct_4gram(text) if ok else None,
            "text_head": " ".join(text.split()[:KEEP_WORDS])}


def arm_samples(eval_dir: str, storage_cfg=None, mode: str = "legacy") -> list[dict]:
    """The evaluation's LongBench-Write samples and ruler records of one arm, each cut to its
    first KEEP_WORDS words (the figures are computed from the whole text first)."""
    out = [_sample(r, "lbw", mode)
           for r in storage.read_jsonl(storage.join(eval_dir, "samples.jsonl"), storage_cfg)]
    ruler = storage.join(eval_dir, "ruler.jsonl")
    if storage.exists(ruler, storage_cfg):
        out += [_sample(r, "ruler", mode) for r in storage.read_jsonl(ruler, storage_cfg)]
    return sorted(out, key=lambda s: (s["kind"], s["required_length"], s["id"]))


def _ci(values: list[float], stat, seed: int, resamples: int = 2000) -> list[float] | None:
    """Bootstrap 95% interval of `stat` over `values` (percentile method, seeded)."""
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    arr = np.asarray(values, dtype=float)
    stats = [stat(arr[rng.integers(0, len(arr), len(arr))]) for _ in range(resamples)]
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [round(float(lo), 3), round(float(hi), 3)]


def _median_ci(values: list[float], seed: int) -> dict:
    return {"median": float(statistics.median(values)) if values else None,
            "ci95": _ci(values, np.median, seed)}


def _share_ci(flags: list[bool], seed: int) -> dict:
    return {"share": round(sum(flags) / len(flags), 3) if flags else None,
            "ci95": _ci([float(f) for f in flags], np.mean, seed)}


def arm_metrics(samples: list[dict], cap: int | None, train: dict | None = None,
                seed: int = 0) -> dict:
    """One arm's figures (report.json `arms[]`): lengths on 2,000+ word requests, the share
    of outputs that end on their own, repetition, S_l, and what it trained on."""
    ok = [s for s in samples if s["ok"]]
    long = [s for s in ok if s["kind"] == "lbw" and s["required_length"] >= LONG]
    words_long = [s["words"] for s in long]
    # The curve of the figure: LongWrite-Ruler's prompts, the same few at every length (the
    # paper's Figure 2); LongBench-Write's lengths have one or two prompts each.
    by_required: dict[int, list[int]] = {}
    for s in ok:
        if s["kind"] == "ruler":
            by_required.setdefault(s["required_length"], []).append(s["words"])
    d4 = [s["distinct_4gram"] for s in ok if s["distinct_4gram"] is not None]
    med = _median_ci(words_long, seed)
    eos = _share_ci([s["finish_reason"] == "stop" for s in ok], seed)
    train = train or {}
    out = {
        "cap_words": cap, "n": len(samples), "failed": len(samples) - len(ok),
        "n_2k_plus": len(long), "median_words_2k_plus": med["median"],
        "median_words_2k_plus_ci95": med["ci95"],
        "eos_share": eos["share"], "eos_share_ci95": eos["ci95"],
        "distinct_4gram": round(float(statistics.median(d4)), 3) if d4 else None,
        "S_l_2k_plus": round(statistics.mean(length_score(s["required_length"], s["words"])
                                             for s in long), 1) if long else None,
        "by_required": {str(k): float(statistics.median(v)) for k, v in sorted(by_required.items())},
        **{k: train.get(k) for k in ("steps", "train_tokens", "eot_loss_final", "loss_first",
                                     "loss_final", "rows")},
    }
    if cap is not None:   # the target: on requests of at least twice the cap
        far = [s for s in ok if s["required_length"] >= 2 * cap]
        m = _median_ci([s["words"] for s in far], seed)
        out["at_2x_cap"] = {"n": len(far), "median_words": m["median"], "ci95": m["ci95"],
                            "median_over_cap": round(m["median"] / cap, 2)
                            if m["median"] is not None else None,
                            "eos_share": _share_ci([s["finish_reason"] == "stop"
                                                    for s in far], seed)["share"]}
    return out


def _arm_order(arm: dict) -> tuple:
    return (arm["name"] != "base", math.inf if arm["cap_words"] is None else arm["cap_words"])


def _markdown(report: dict) -> str:
    cols = ["arm", "cap", "rows", "steps", "train tokens", "EOT loss (last epoch)", "n 2k+",
            "median words 2k+ (95% CI)", "S_l 2k+", "ends on its own", "distinct 4-gram",
            "at 2x cap: n, median/cap, ends"]
    lines = ["# Length sweep: output length follows the SFT data's length", "",
             f"Base model: `{report.get('base_model')}`. Data: {report.get('data')}. "
             f"Host: {report.get('host') or 'not recorded'}.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for a in report["arms"]:
        far = a.get("at_2x_cap") or {}
        ci = a.get("median_words_2k_plus_ci95")
        lines.append("| " + " | ".join(str(x) for x in [
            a["name"], a["cap_words"] or "-", a.get("rows") or "-", a.get("steps") or "-",
            a.get("train_tokens") or "-",
            round(a["eot_loss_final"], 3) if a.get("eot_loss_final") is not None else "-",
            a["n_2k_plus"],
            f"{a['median_words_2k_plus']} ({ci[0]:.0f}-{ci[1]:.0f})" if ci
            else a["median_words_2k_plus"], a["S_l_2k_plus"], a["eos_share"],
            a["distinct_4gram"],
            f"{far['n']}, {far['median_over_cap']}, {far['eos_share']}" if far else "-"]) + " |")
    lines += ["", f"![output words against required words]({PLOT})", "",
              "Each arm: the same base model, rows and recipe; only the answers' length cap "
              "differs. Evaluation: the same prompts for every arm (judge off)."]
    return "\n".join(lines) + "\n"


PLOT = "length_sweep.png"


def _plot(report: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 5))
    lengths = sorted({int(k) for a in report["arms"] for k in a["by_required"]})
    for a in report["arms"]:
        xs = [x for x in lengths if str(x) in a["by_required"]]
        line, = ax.plot(xs, [max(a["by_required"][str(x)], 1) for x in xs], marker="o",
                        label=a["name"])
        if a["cap_words"]:
            ax.axhline(a["cap_words"], color=line.get_color(), linestyle=":", linewidth=1)
    if lengths:
        ax.plot(lengths, lengths, color="grey", linestyle="--", linewidth=1, label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("required length (words)")
    ax.set_ylabel("output length (median words, LongWrite-Ruler)")
    ax.set_title("Output length by SFT length cap (dotted: each arm's cap)")
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_report(results_dir: str, names: list[str], meta: dict | None = None) -> dict:
    """report.json, report.md and the plot in `results_dir`, from the `arm-<name>.json` files
    of the arms `names` (a file of an arm no longer configured is left out)."""
    arms = []
    for name in names:
        r = json.loads(Path(results_dir, f"arm-{name}.json").read_text())
        arms.append({"name": r["arm"], **arm_metrics(r["samples"], r["cap_words"],
                                                     r.get("train"), seed=0)})
    report = {**(meta or {}), "arms": sorted(arms, key=_arm_order)}
    out = Path(results_dir)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(report))
    (out / PLOT).write_bytes(_plot(report))
    return report
