"""The curation report: funnel, required vs produced words, language mix, dedup clusters.

Numbers come from one polars frame with a row per input row (id, stage, reason, lang,
required_words, response_words, length_score, edits); `build_stats` turns it into a JSON-able
dict, `write_report` renders report.md + report.json + PNG plots (matplotlib, Agg backend) into
the output directory (any fsspec URI).
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # headless: Ray workers and CI have no display
import matplotlib.pyplot as plt
import polars as pl

from dataset_builder.core import storage
from dataset_builder.core.stats import describe, round_num
from dataset_builder.curate.postprocess import EDIT_KINDS

HIST_PNG = "words_hist.png"
SCATTER_PNG = "required_vs_produced.png"


def build_stats(frame: pl.DataFrame, dedup: dict) -> dict:
    """The funnel and the distributions; `frame` has one row per input row."""
    kept = frame.filter(pl.col("stage").is_null())
    rejected = frame.filter(pl.col("stage").is_not_null())
    by_reason = (rejected.group_by("stage", "reason").len()
                 .sort(["stage", "len", "reason"], descending=[False, True, False]))
    stages = ("validate", "filter", "dedup", "signals")
    funnel = {
        "rows_in": frame.height,
        "stages": [{"stage": s, "dropped": int(rejected.filter(pl.col("stage") == s).height),
                    "reasons": {r["reason"]: r["len"] for r in
                                by_reason.filter(pl.col("stage") == s).iter_rows(named=True)}}
                   for s in stages],
        "rejected": rejected.height,
        "rows_out": kept.height,
    }
    funnel["balanced"] = funnel["rows_in"] == funnel["rows_out"] + funnel["rejected"]
    valid = frame.filter(pl.col("stage").is_null() | (pl.col("stage") != "validate"))
    with_req = kept.filter(pl.col("required_words").is_not_null())
    ratio = (with_req["response_words"] / with_req["required_words"]) if with_req.height else None
    words = {
        "produced_kept": describe(kept["response_words"]),
        "required_kept": describe(kept["required_words"]),
        "produced_all_valid": describe(valid["response_words"]),
        "length_score_kept": describe(kept["length_score"]),
        "produced_over_required_kept": (
            {"median": round_num(ratio.median(), 3), "p10": round_num(ratio.quantile(0.1), 3),
             "p90": round_num(ratio.quantile(0.9), 3)} if ratio is not None else None),
    }
    lang = {name: {r["lang"] or "unknown": r["len"] for r in
                   part.group_by("lang").len().sort("lang", nulls_last=True).iter_rows(named=True)}
            for name, part in (("in_valid", valid), ("out", kept))}
    edits = {k: int(valid[f"edit_{k}"].sum()) for k in EDIT_KINDS}
    edited_rows = int(valid.select(pl.sum_horizontal([pl.col(f"edit_{k}") for k in EDIT_KINDS])
                                   .gt(0).sum()).item()) if valid.height else 0
    return {"funnel": funnel, "words": words, "languages": lang, "dedup": dedup,
            "postprocess": {"rows_edited": edited_rows, "edits": edits},
            "signals": _signal_stats(frame)}


def _signal_stats(frame: pl.DataFrame) -> dict:
    """Rows scored, rows not scorable (by reason), and the signals' distributions over every
    scored row and over the kept ones."""
    scored = frame.filter(pl.col("relevance").is_not_null())
    failed = frame.filter(pl.col("signal_error").is_not_null())
    kept = scored.filter(pl.col("stage").is_null())
    return {"scored": scored.height,
            "not_scored": {r: n for r, n in failed.group_by(
                pl.col("signal_error").str.split(":").list.first()).len().iter_rows()},
            "perplexity": describe(scored["perplexity"]),
            "relevance": describe(scored["relevance"], digits=4),
            "relevance_kept": describe(kept["relevance"], digits=4)}


SIGNALS_PNG = "signals_hist.png"


def _signal_plot(frame: pl.DataFrame) -> bytes:
    scored = frame.filter(pl.col("relevance").is_not_null())
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, name in ((a, "relevance"), (b, "perplexity")):
        for label, part, color in (("kept", scored.filter(pl.col("stage").is_null()),
                                    "tab:blue"),
                                   ("rejected", scored.filter(pl.col("stage").is_not_null()),
                                    "tab:red")):
            if part.height:
                ax.hist(part[name].to_list(), bins=20, alpha=0.6, color=color,
                        label=f"{label} ({part.height})")
        ax.set_xlabel(name + (" (log scale)" if name == "perplexity" else ""))
        ax.set_ylabel("rows")
        if name == "perplexity":
            ax.set_xscale("log")
        ax.legend()
    fig.suptitle("Quality signals under the reference model")
    return _png(fig)


def _plots(frame: pl.DataFrame) -> dict[str, bytes]:
    kept = frame.filter(pl.col("stage").is_null())
    valid = frame.filter(pl.col("stage").is_null() | (pl.col("stage") != "validate"))
    out = {}
    fig, ax = plt.subplots(figsize=(7, 4))
    produced = kept["response_words"].drop_nulls().to_list()
    required = kept["required_words"].drop_nulls().to_list()
    if produced or required:
        ax.hist([produced, required], bins=30, label=["produced (kept)", "required (kept)"])
        ax.legend()
    ax.set_xlabel("words")
    ax.set_ylabel("rows")
    ax.set_title("Response length of the curated rows")
    out[HIST_PNG] = _png(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    pts = valid.filter(pl.col("required_words").is_not_null()
                       & (pl.col("response_words") > 0))
    for label, part, color in (("kept", pts.filter(pl.col("stage").is_null()), "tab:blue"),
                               ("rejected", pts.filter(pl.col("stage").is_not_null()),
                                "tab:red")):
        ax.scatter(part["required_words"].to_list(), part["response_words"].to_list(), s=8,
                   alpha=0.6, label=f"{label} ({part.height})", color=color)
    if pts.height:
        lo = max(1, min(pts["required_words"].min(), pts["response_words"].min()))
        hi = max(pts["required_words"].max(), pts["response_words"].max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
        ax.set_xlim(lo / 1.2, hi * 1.2)
        ax.set_ylim(lo / 1.2, hi * 1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("required words")
    ax.set_ylabel("produced words")
    ax.set_title("Required vs produced length")
    out[SCATTER_PNG] = _png(fig)
    if frame["relevance"].drop_nulls().len():
        out[SIGNALS_PNG] = _signal_plot(frame)
    return out


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def render_markdown(stats: dict, title: str = "LongWriter curation report") -> str:
    f = stats["funnel"]
    lines = [f"# {title}", "",
             f"Input: `{stats.get('input', '')}`  ", f"Output: `{stats.get('output', '')}`  ",
             (f"Config hash: `{stats.get('config_hash', '')}`, code version: "
             f"`{stats.get('code_version', '')}`"), "",
             *(["**Written by the instant engine** (backend `instant`, model `instant:...`): "
                "stand-in text made without a model to rehearse the orchestration; not "
                "training data (training refuses it unless `allow_instant_data`).", ""]
               if stats.get("backend") == "instant" else []),
             "## Funnel", "", "| step | rows |", "|---|---:|", f"| rows in | {f['rows_in']} |"]
    for s in f["stages"]:
        lines.append(f"| dropped at {s['stage']} | {s['dropped']} |")
        lines += [f"| &nbsp;&nbsp;{r} | {n} |" for r, n in s["reasons"].items()]
    lines += [f"| **rows out** | **{f['rows_out']}** |", "",
              (f"in = out + rejected: {f['rows_in']} = {f['rows_out']} + {f['rejected']} "
              f"({'ok' if f['balanced'] else 'MISMATCH'})"), "",
              "## Required vs produced words", "",
              "| | count | mean | p10 | median | p90 | min | max |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, d in stats["words"].items():
        if isinstance(d, dict) and "count" in d:
            lines.append(f"| {name.replace('_', ' ')} | {d['count']} | " + " | ".join(
                str(d.get(k, "")) for k in ("mean", "p10", "median", "p90", "min", "max")) + " |")
    r = stats["words"].get("produced_over_required_kept")
    if r:
        lines += ["", (f"Produced / required (kept rows): median {r['median']}, "
                  f"p10 {r['p10']}, p90 {r['p90']}.")]
    lines += ["", f"![histogram]({HIST_PNG})", "", f"![required vs produced]({SCATTER_PNG})", "",
              "## Languages", "", "| lang | valid in | out |", "|---|---:|---:|"]
    langs = sorted(set(stats["languages"]["in_valid"]) | set(stats["languages"]["out"]))
    lines += [f"| {lang} | {stats['languages']['in_valid'].get(lang, 0)} | "
              f"{stats['languages']['out'].get(lang, 0)} |" for lang in langs]
    lines += ["", "## Duplicates", "", ("| pass | clusters | rows in clusters | dropped | "
              "largest | sizes (size: clusters) |"), "|---|---:|---:|---:|---:|---|"]
    for name, d in stats["dedup"].items():
        sizes = ", ".join(f"{k}: {v}" for k, v in d["size_histogram"].items()) or "-"
        lines.append(f"| {name} | {d['clusters']} | {d['rows_in_clusters']} | {d['dropped']} | "
                     f"{d['max_size']} | {sizes} |")
    p = stats["postprocess"]
    lines += ["", "## Post-processing", "",
              f"{p['rows_edited']} rows had plan artifacts or noise removed: " +
              ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in p["edits"].items()) + ".", ""]
    return "\n".join(lines + _signal_lines(stats.get("signals") or {}))


def _signal_lines(s: dict) -> list[str]:
    if not s.get("scored"):
        return []
    lines = ["## Quality signals", "",
             (f"{s['scored']} rows scored under the reference model in {s.get('seconds')} s "
              f"(its engine's start included; not scored: {s['not_scored'] or 'none'}). "
              "Relevance: how much the instruction raises the "
              "answer's log-probability per token (below 0: the instruction does not help). "
              "Perplexity: low is fluent, but repetition is lowest of all, so it is only ever "
              "an upper threshold."), "", "| signal | count | mean | p10 | median | p90 | min | "
             "max |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("relevance", "relevance_kept", "perplexity"):
        d = s[name]
        if d.get("count"):
            lines.append(f"| {name.replace('_', ' ')} | {d['count']} | " + " | ".join(
                str(d.get(k, "")) for k in ("mean", "p10", "median", "p90", "min", "max"))
                + " |")
    lines += ["", f"![signals]({SIGNALS_PNG})", ""]
    for key, title in (("lowest_relevance", "Lowest relevance"),
                       ("highest_perplexity", "Highest perplexity")):
        lines += [f"### {title}", "", "| id | relevance | perplexity | dropped | instruction | "
                  "answer (start) |", "|---|---:|---:|---|---|---|"]
        for r in s.get(key, []):
            cell = [str(r[k]).replace("|", "/").replace("\n", " ") for k in ("prompt",
                                                                              "response")]
            lines.append(f"| {r['id']} | {r['relevance']:.4f} | {r['perplexity']:.1f} | "
                         f"{r['reason'] or '-'} | {cell[0]} | {cell[1]} |")
        lines.append("")
    return lines


def write_report(uri: str, stats: dict, frame: pl.DataFrame,
                 cfg: storage.StorageConfig | None = None) -> None:
    for name, data in _plots(frame).items():
        storage.write_bytes_atomic(storage.join(uri, name), data, cfg)
    storage.write_json(storage.join(uri, "report.json"), stats, cfg)
    storage.write_bytes_atomic(storage.join(uri, "report.md"),
                               render_markdown(stats).encode("utf-8"), cfg)
