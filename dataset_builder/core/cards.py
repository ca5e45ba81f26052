"""Dataset and model cards: the `README.md` with YAML metadata that the Hugging Face Hub and
`huggingface_hub.DatasetCard.load` / `ModelCard.load` read, written beside a curated dataset
(dataset_builder/curate) and an exported model (train/export.py, train/dpo.py).

    write_card(uri, dataset_meta(...), body, storage_cfg)

The metadata keys are the Hub's (license, language, size_categories, task_categories,
base_model, datasets, configs/data_files); the body says how the thing was made. Nothing is
uploaded here (no network): the directory is laid out for `push_to_hub`. Hand-written rather
than huggingface_hub's CardData classes so the cards are plain text made from our manifests,
with no hub call and no template files; the tests load them with huggingface_hub.
"""
from __future__ import annotations

import yaml

from dataset_builder.core import storage

LICENSE_NOTE = ("The license is `unknown` because none was configured (`license`). It matters: "
                "the terms of the model that wrote the answers and of the instructions bind "
                "this data and what is trained on it (the paper's data was written by GPT-4o, "
                "under OpenAI's terms). Set `license` to what those terms allow.")


def size_category(n: int) -> str:
    """The Hub's size_categories bucket for n rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>10M"


def render(meta: dict, body: str) -> str:
    return ("---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"
            + body.strip() + "\n")


def write_card(uri: str, meta: dict, body: str, storage_cfg=None) -> None:
    """`<uri>/README.md` (written atomically)."""
    storage.write_bytes_atomic(storage.join(uri.rstrip("/"), "README.md"),
                               render(meta, body).encode(), storage_cfg)


def license_lines(license: str | None) -> tuple[str, str]:
    """(the metadata's license, the body's note: empty when one was set)."""
    return (license, "") if license else ("unknown", LICENSE_NOTE)
