"""LongBench-Write's data: the published prompt sets (vendored under eval/data), parsed with a
reject for every bad line, or another prompt set scored the benchmark's way (`custom_items`)."""
from __future__ import annotations

import hashlib
import json

from dataset_builder.core import records, storage
from dataset_builder.core.text import detect_lang, stable_id
from eval import scoring
from eval.config import resolve_data_dir

FULL_FILE = "longbench_write.jsonl"
EN_FILE = "longbench_write_en.jsonl"


def _reject(line: int, reason: str, raw: str) -> dict:
    return records.reject_record({"line": line, "stage": "benchmark", "reason": reason,
                                  "raw": raw})


def parse_benchmark(data: bytes, en_prompts: set[str] | None = None
                    ) -> tuple[list[dict], list[dict]]:
    """(items, rejects) from LongBench-Write jsonl bytes; every bad line is a reject.

    The output language is "en" for prompts of the English-output subset file (two of its
    prompts are written in Chinese), else detected from the prompt.
    """
    items, rejects, seen = [], [], set()
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        text = raw.decode("utf-8", "replace")
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            rejects.append(_reject(n, f"invalid_utf8: byte {e.start}", text))
            continue
        except json.JSONDecodeError as e:
            rejects.append(_reject(n, f"malformed_json: {e.msg} at column {e.colno}", text))
            continue
        if not isinstance(obj, dict):
            rejects.append(_reject(n, f"not_an_object: {type(obj).__name__}", text))
            continue
        prompt, length, typ = obj.get("prompt"), obj.get("length"), obj.get("type", "unknown")
        if not isinstance(prompt, str) or not prompt.strip():
            rejects.append(_reject(n, "missing_or_empty_prompt", text))
            continue
        if isinstance(length, bool) or not isinstance(length, (int, float)) or length <= 0 \
                or length != int(length):
            rejects.append(_reject(n, f"bad_length: {length!r}", text))
            continue
        item_id = stable_id(f"{prompt}\x00{int(length)}")
        if item_id in seen:
            rejects.append(_reject(n, "duplicate_item", text))
            continue
        seen.add(item_id)
        lang = obj.get("lang") or ("en" if en_prompts is not None and prompt in en_prompts
                                   else ("zh" if en_prompts is not None else detect_lang(prompt)))
        items.append({"id": item_id, "line": n, "prompt": prompt, "type": str(typ),
                      "lang": str(lang), "required_length": int(length),
                      "bucket": scoring.length_bucket(int(length))})
    return items, rejects


def benchmark_uri(data_dir: str, subset: str = "all") -> str:
    """The benchmark file of `subset` ("all" or "en") under `data_dir`."""
    return storage.join(resolve_data_dir(data_dir), EN_FILE if subset == "en" else FULL_FILE)


def load_benchmark(data_dir: str, subset: str = "all", storage_cfg=None
                   ) -> tuple[list[dict], list[dict], dict]:
    """(items, rejects, meta) for `subset`; raises StorageError if the file is missing."""
    base = resolve_data_dir(data_dir)
    uri = benchmark_uri(data_dir, subset)
    storage.check_reachable(uri, storage_cfg, must_exist=True)
    data = storage.read_bytes(uri, storage_cfg)
    en_uri = storage.join(base, EN_FILE)
    en_prompts = None
    if subset == "en":
        en_prompts = None  # every item of the English subset is English output
    elif storage.exists(en_uri, storage_cfg):
        en_items, _ = parse_benchmark(storage.read_bytes(en_uri, storage_cfg))
        en_prompts = {i["prompt"] for i in en_items}
    items, rejects = parse_benchmark(data, en_prompts)
    if subset == "en":
        for i in items:
            i["lang"] = "en"
    meta = {"data_file": uri, "data_sha256": hashlib.sha256(data).hexdigest(),
            "lines": sum(1 for line in data.split(b"\n") if line.strip()),
            "lang_source": "english-subset file" if en_prompts is not None or subset == "en"
            else "detected from prompt"}
    return items, rejects, meta


def custom_items(rows: list[dict]) -> tuple[list[dict], list[dict], dict]:
    """Items of another prompt set (the DPO pairs job's samples) scored the benchmark's way:
    each row has id, prompt, lang, required_length and any extra keys, which are kept."""
    items = [{"type": "custom", **r, "bucket": scoring.length_bucket(r["required_length"])}
             for r in rows]
    return items, [], {"data_file": "custom items", "lines": len(items),
                       "lang_source": "given", "data_sha256": None}
