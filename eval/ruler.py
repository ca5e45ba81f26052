"""LongWrite-Ruler: how long can the model write when asked for a given length?

Two prompt sets, 4 English and 4 Chinese prompts each, x the required lengths (published:
1000, 2000, 5000, 10000, 20000, 30000):
- published: the set released with the paper (eval/data/longwrite_ruler, Apache-2.0, see its
  NOTICE); each prompt states its length as a number, which is replaced for other lengths;
- project: 8 prompts written for this project (RULER_PROMPTS below).
Only the output length matters here (no judge): the summary gives the maximum length reached
and the share of prompts that reach at least 80% of the required length, overall and per
required length.
"""
from __future__ import annotations

import json
import re

from dataset_builder.core.text import count_words, detect_lang, stable_id
from eval.config import REPO_ROOT, RULER_FILE

REACHED = 0.8  # a prompt "reaches" its required length at >= 80% of it

RULER_PROMPTS = [
    ("en", ("Write a {length}-word travel memoir about a month spent walking a coastal trail, "
           "with the people met along the way, the weather, and what the walk changed.")),
    ("zh", "请写一篇{length}字的散文，回忆一座南方小城的老街在四季中的变化，以及街上人们的生活。"),
    ("en", ("Write a {length}-word history of the printing press, from movable type to the "
           "digital age, and explain how it changed science, religion and politics.")),
    ("zh", "请写一篇{length}字的科普文章，介绍人体免疫系统的工作原理，以及疫苗是如何起作用的。"),
    ("en", ("Write a {length}-word short story about a lighthouse keeper who finds a message "
           "in a bottle that seems to be written in her own handwriting.")),
    ("zh", "请写一篇{length}字的商业分析报告，讨论新能源汽车行业的发展现状、竞争格局与未来趋势。"),
    ("en", ("Write a {length}-word guide for first-time home gardeners: soil, seeds, watering, "
           "pests, and planning a garden through the year.")),
    ("zh", "请写一篇{length}字的小说，讲述一位年轻教师来到山村学校后的第一年。"),
]


def published_templates(path: str | None = None) -> list[tuple[str, str]]:
    """(lang, template) of each published prompt, in file order: the prompt at its first
    length with that number replaced by `{length}` (the published prompts differ only there)."""
    templates: list[tuple[str, str]] = []
    seen = set()
    with open(path or REPO_ROOT / RULER_FILE, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            template = re.sub(rf"(?<!\d){int(row['length'])}(?!\d)", "{length}", row["prompt"],
                              count=1)
            if "{length}" in template and template not in seen:
                seen.add(template)
                templates.append((detect_lang(row["prompt"]), template))
    return templates


def ruler_items(lengths: list[int], n_prompts: int = 0, languages: list[str] | tuple = (),
                prompt_set: str = "published") -> list[dict]:
    """One item per (prompt, required length); ids are stable across runs. `languages`
    (empty: all) and then `n_prompts` (0: all) choose the prompts."""
    prompts = published_templates() if prompt_set == "published" else RULER_PROMPTS
    prompts = [p for p in prompts if not languages or p[0] in languages]
    prompts = prompts[:n_prompts] if n_prompts else prompts
    items = []
    for p_idx, (lang, template) in enumerate(prompts):
        for length in lengths:
            prompt = template.format(length=length)
            items.append({"id": f"ruler-{p_idx}-{length}-{stable_id(prompt)[:8]}",
                          "prompt": prompt, "lang": lang, "type": "ruler",
                          "required_length": int(length), "ruler_prompt": p_idx})
    return items


def ruler_summary(records: list[dict], mode: str = "legacy") -> dict:
    """Maximum output length, share reaching >= 80% of required, per required length.

    `records` are generation records; a failed generation counts as not reaching (and is
    counted in `failed`), so the denominator is always every ruler item.
    """
    per_length: dict[int, list] = {}
    lengths_out, reached, failed = [], 0, 0
    for r in records:
        ok = r.get("status") == "ok"
        n = count_words(r.get("response") or "", mode) if ok else 0
        failed += not ok
        hit = ok and n >= REACHED * r["required_length"]
        reached += hit
        lengths_out.append(n)
        per_length.setdefault(int(r["required_length"]), []).append((n, hit, ok))
    table = {}
    for length in sorted(per_length):
        rows = per_length[length]
        outs = sorted(n for n, _, _ in rows)
        table[str(length)] = {
            "n": len(rows), "failed": sum(not ok for _, _, ok in rows),
            "mean_output": sum(outs) / len(outs), "median_output": outs[len(outs) // 2]
            if len(outs) % 2 else (outs[len(outs) // 2 - 1] + outs[len(outs) // 2]) / 2,
            "max_output": outs[-1], "share_reached": sum(h for _, h, _ in rows) / len(rows)}
    return {"n": len(records), "failed": failed, "threshold": REACHED,
            "max_output_length": max(lengths_out) if lengths_out else 0,
            "share_reached": reached / len(records) if records else None,
            "per_length": table, "word_count_mode": mode}
