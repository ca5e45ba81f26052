"""report.md and its PNG plots (matplotlib Agg), written next to results.json.

Plots: required vs produced length (log-log, with y = x, as in the paper's length figure), the
LongWrite-Ruler curve (log-log, with y = x), and S_l / S_q / S per required-length bucket with
95% CI error bars.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from dataset_builder.core import storage
from dataset_builder.core.text import count_words
from eval.scoring import DIMENSIONS

PLOTS = {"length": "length_scatter.png", "ruler": "ruler.png", "buckets": "buckets.png"}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _loglog_identity(ax, lo: float, hi: float) -> None:
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)


def length_plot(rows: list[dict]) -> bytes:
    """Required vs produced length; a zero-length output is drawn at 1 (log axes)."""
    fig, ax = plt.subplots(figsize=(6, 6))
    done = [r for r in rows if r["output_length"] is not None]
    hi = max([25000] + [max(r["required_length"], r["output_length"]) * 1.5 for r in done])
    colors = {"en": "tab:blue", "zh": "tab:red"}
    for lang in sorted({r["lang"] for r in done}):
        sel = [r for r in done if r["lang"] == lang]
        ax.scatter([r["required_length"] for r in sel], [max(1, r["output_length"]) for r in sel],
                   s=60, alpha=0.4, c=colors.get(lang, "tab:gray"), label=lang)
    _loglog_identity(ax, 1, hi)
    ax.set_xlabel("Required length")
    ax.set_ylabel("Output length (0 drawn at 1)")
    ax.set_title("LongBench-Write: required vs output length")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return _png(fig)


def ruler_plot(records: list[dict], word_count_mode: str) -> bytes:

    fig, ax = plt.subplots(figsize=(6, 6))
    by_prompt: dict[int, list] = {}
    for r in records:
        n = count_words(r.get("response") or "", word_count_mode) if r.get("status") == "ok" else 0
        by_prompt.setdefault(r["ruler_prompt"], []).append((r["required_length"], max(1, n),
                                                            r["lang"]))
    hi = 50000
    for p, pts in sorted(by_prompt.items()):
        pts.sort()
        hi = max(hi, max(y for _, y, _ in pts) * 1.5)
        ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], "o-", alpha=0.7,
                color="tab:blue" if pts[0][2] == "en" else "tab:red",
                label=f"prompt {p} ({pts[0][2]})")
    _loglog_identity(ax, 1, hi)
    ax.set_xlabel("Required length")
    ax.set_ylabel("Output length (0 drawn at 1)")
    ax.set_title("LongWrite-Ruler")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig)


def bucket_plot(by_bucket: dict) -> bytes:
    names = [b for b in by_bucket]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.27
    for k, (metric, color) in enumerate((("S_l", "tab:blue"), ("S_q", "tab:orange"),
                                          ("S", "tab:green"))):
        xs, ys, errs = [], [], [[], []]
        for i, b in enumerate(names):
            v, ci = by_bucket[b][metric], by_bucket[b][f"{metric}_ci95"]
            if v is None:
                continue
            xs.append(i + (k - 1) * width)
            ys.append(v)
            errs[0].append(max(0.0, v - ci[0]) if ci else 0.0)
            errs[1].append(max(0.0, ci[1] - v) if ci else 0.0)
        ax.bar(xs, ys, width, yerr=errs, capsize=3, color=color, label=metric)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f"{b}\n(n={by_bucket[b]['n']})" for b in names])
    ax.set_ylim(0, 100)
    ax.set_ylabel("score (95% CI)")
    ax.set_title("Scores by required length")
    ax.legend()
    fig.tight_layout()
    return _png(fig)


def _fmt(v, ci=None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci and ci[0] is not None else "")


def _table(groups: dict, title: str) -> list[str]:
    lines = [f"| {title} | n | generated | judged | S | S_l | S_q |", "|---|---|---|---|---|---|---|"]
    for g, s in groups.items():
        lines.append(f"| {g} | {s['n']} | {s['n_generated']} | {s['n_judged']} | "
                     f"{_fmt(s['S'], s['S_ci95'])} | {_fmt(s['S_l'], s['S_l_ci95'])} | "
                     f"{_fmt(s['S_q'], s['S_q_ci95'])} |")
    return lines


def _headline(results: dict) -> list[str]:
    """Title, whether the numbers compare with the paper's, and an incomplete run's warning."""
    c = results["coverage"]
    L = ["# LongBench-Write report", ""]
    if results["published_comparable"]:
        L.append("Protocol: **as published**; the numbers compare with the paper's.")
    else:
        L.append("**Not comparable with the paper's numbers:** "
                 + "; ".join(results["not_comparable_because"]) + ".")
    if not c["complete"]:
        L.append("")
        L.append(f"**Incomplete run:** {c['generated']}/{c['items']} generated, "
                 f"{c['judged']}/{c['generated']} judged, {c['rejected_lines']} rejected "
                 "benchmark line(s). Scores are over the stated denominators only.")
    return L


def _protocol_and_coverage(p: dict, c: dict) -> list[str]:
    """The protocol (what decides the numbers) and coverage (their denominators) tables."""
    L = ["## Protocol", "", "| field | value |", "|---|---|"]
    d, j = p["decoding"], p["judge"]
    for k, v in [("model", p["model"]), ("backend", p["backend"]),
                 ("subset", p["subset"]), ("limit", p["limit"] or "none"),
                 ("data file sha256", (p["data_sha256"] or "-")[:16]),
                 ("decoding", (f"temperature {d['temperature']}, top_p {d['top_p']}, "
                              f"max_new_tokens {d['max_new_tokens']}, seed {d['seed']}")),
                 ("chat template", p["chat_template"]),
                 ("judge", (f"{j['model']} ({j['backend']}), temperature {j['temperature']}, "
                           f"k={j['samples']}, constraint {j['constraint']}")),
                 ("judge prompt", f"{j['prompt_version']} / {j['prompt_hash']}"),
                 ("word count", p["word_count_mode"]), ("code version", p["code_version"]),
                 ("config hash", p["config_hash"])]:
        L.append(f"| {k} | {v} |")
    L += ["", "## Coverage", "", "| what | count |", "|---|---|"]
    for k in ("benchmark_lines", "rejected_lines", "items", "generated", "generation_failed",
              "judged", "judge_replicates_expected", "judge_replicates_ok",
              "judge_replicates_failed", "empty_responses", "judge_truncated"):
        L.append(f"| {k} | {c[k]} |")
    if c["judge_failure_reasons"]:
        L.append("| judge failure reasons | " + ", ".join(
            f"{k}: {v}" for k, v in c["judge_failure_reasons"].items()) + " |")
    return L


def _ruler_section(r: dict) -> list[str]:
    """LongWrite-Ruler: the maximum output length, and per required length what was reached."""
    L = ["", "## LongWrite-Ruler", "",
         (f"Maximum output length: **{r['max_output_length']}** words; "
          f"{r['share_reached'] * 100:.0f}% of {r['n']} prompts reach at least "
          f"{r['threshold'] * 100:.0f}% of the required length ({r['failed']} failed)."), "",
         "| required | n | mean output | median | max | reached >= 80% |",
         "|---|---|---|---|---|---|"]
    for length, s in r["per_length"].items():
        L.append(f"| {length} | {s['n']} | {s['mean_output']:.0f} | {s['median_output']:.0f}"
                 f" | {s['max_output']} | {s['share_reached'] * 100:.0f}% |")
    return L + ["", f"![LongWrite-Ruler]({PLOTS['ruler']})"]


def render_markdown(results: dict) -> str:
    """report.md: headline, overall scores, protocol, coverage, the breakdowns and the plots."""
    o = results["overall"]
    L = _headline(results)
    L += ["", "## Overall (95% bootstrap CI)", ""]
    L += _table({"all": o}, "set")
    L += ["", (f"S_l over {o['n_generated']} generated responses; S_q over {o['n_judged']} "
          "judged responses; S = (S_l + S_q) / 2."), ""]
    L += _protocol_and_coverage(results["protocol"], results["coverage"])
    L += ["", "## By required length", ""] + _table(results["by_bucket"], "bucket")
    L += ["", f"![scores by bucket]({PLOTS['buckets']})", "",
          "## By language", ""] + _table(results["by_lang"], "lang")
    L += ["", "## By type", ""] + _table(results["by_type"], "type")
    if results["dimensions"]:
        L += ["", "## Quality dimensions", "", "| dimension | mean rating (1-5) | score |",
              "|---|---|---|"]
        for dim in DIMENSIONS:
            v = results["dimensions"][dim]
            L.append(f"| {dim} | {v['mean_rating']:.2f} | {v['score']:.1f} |")
    L += ["", "## Output length", "", f"![required vs output length]({PLOTS['length']})"]
    if results.get("ruler"):
        L += _ruler_section(results["ruler"])
    L.append("")
    return "\n".join(L)


def write_report(results: dict, rows: list[dict], ruler_records: list[dict], out: str,
                 storage_cfg=None) -> None:
    """report.md plus PNGs under `out` (any fsspec URI)."""
    storage.write_bytes_atomic(storage.join(out, PLOTS["length"]), length_plot(rows), storage_cfg)
    storage.write_bytes_atomic(storage.join(out, PLOTS["buckets"]),
                               bucket_plot(results["by_bucket"]), storage_cfg)
    if ruler_records:
        storage.write_bytes_atomic(storage.join(out, PLOTS["ruler"]),
                                   ruler_plot(ruler_records, results["protocol"]["word_count_mode"]),
                                   storage_cfg)
    storage.write_bytes_atomic(storage.join(out, "report.md"),
                               render_markdown(results).encode("utf-8"), storage_cfg)


__all__ = ["bucket_plot", "length_plot", "render_markdown", "ruler_plot", "write_report"]
