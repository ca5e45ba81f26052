"""The curated dataset's card (`<output>/README.md`): Hub metadata and how the data was made.

Its `configs` list exactly the parts the manifest commits (never rejects or uncommitted parts),
so `load_dataset("<dir or repo>")` reads what the manifest says the dataset is.
"""
from __future__ import annotations

from dataset_builder.core.cards import license_lines, size_category


def dataset_card(license: str | None, stats: dict, input_manifest: dict, files: list[str]
                 ) -> tuple[dict, str]:
    """(metadata, body) for a curation result: `stats` as in `_stats.json`, the generation
    manifest it was made from, and the committed part names."""
    f, w = stats["funnel"], stats["words"]
    langs = sorted(k for k in stats["languages"]["out"] if k != "unknown")
    lic, note = license_lines(license)
    gen = input_manifest.get("config") or {}
    model = (gen.get("engine") or {}).get("model") or "unknown"
    if stats.get("backend") == "instant":   # stand-in text: the card must say so
        model = f"instant:{model} (the instant engine: stand-in text, no model; not for training)"
    meta = {"license": lic, "language": langs, "size_categories": [size_category(f["rows_out"])],
            "task_categories": ["text-generation"],
            "tags": ["long-form-generation", "agentwrite", "longwriter", "synthetic"],
            "pretty_name": "LongWriter-style long-output SFT data",
            "configs": [{"config_name": "default",
                         "data_files": [{"split": "train", "path": list(files)}]}]}
    kept = w["produced_kept"] or {}
    reasons = "\n".join(f"| {s['stage']} | {s['dropped']} | "
                        + ", ".join(f"{r} {n}" for r, n in s["reasons"].items()) + " |"
                        for s in f["stages"])
    body = f"""
# LongWriter-style long-output SFT data

{f['rows_out']} rows of long answers in the LongWriter-6k format (`messages`: one user turn,
one assistant turn; plus `required_words`, `response_words`, `plan`, `lang`, `model`), written
by AgentWrite (a plan of paragraphs with word budgets, then each paragraph in turn; arXiv
2408.07055) with this project (LongWriter on Ray), then curated.

## How it was made
- Answers written by: `{model}` (AgentWrite layout `{gen.get('agentwrite', {}).get('layout')}`)
- Generation input fingerprint: `{stats.get('input_fingerprint')}` ({stats.get('input')})
- Curation config hash: `{stats.get('config_hash')}`, code version `{stats.get('code_version')}`
- Answer words (kept): median {kept.get('median')}, p10 {kept.get('p10')}, p90 \
{kept.get('p90')}, max {kept.get('max')}

| stage | rows dropped | reasons |
|---|---|---|
{reasons}

{f['rows_in']} rows in, {f['rows_out']} kept, {f['rejected']} rejected (each with its reason in
`_rejects/`, not part of this dataset).

## License
`{lic}`. {note}
"""
    return meta, body
