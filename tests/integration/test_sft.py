"""SFT on Ray Train for real: 2 CPU workers (gloo, DDP) train the tiny model from a curated
dataset on moto S3, a worker is killed mid-run and training goes on from the last checkpoint,
a failed job rerun resumes, a finished one does nothing, and the export loads in vLLM."""
from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from dataset_builder.core import storage
from dataset_builder.core.config import load_config
from dataset_builder.core.records import LONGWRITER
from dataset_builder.curate.shards import to_messages
from tests.helpers import chat_with_export, kill_a_worker_after_checkpoint
from train.config import SFTConfig
from train.sft import TrainError, run_sft

pytestmark = pytest.mark.integration
BUCKET = "s3://test-bucket"
TINY_YAML = "ray_jobs/configs/sft_tiny.yaml"


def _record(i: int, prompt: str, response: str) -> dict:
    return {"id": f"r{i}", "messages": to_messages(prompt, response), "source": "test",
            "lang": "en", "required_words": 100, "response_words": len(response.split()),
            "length_score": None, "plan": [], "model": "m", "config_hash": "h",
            "layout": "paper"}


@pytest.fixture(scope="module")
def curated(moto_s3):
    """A curated dataset directory on S3: 8 memorizable rows and 2 bad ones in the committed
    part, plus an uncommitted part that must not be read."""
    uri = f"{BUCKET}/sft-data/longwriter"
    topics = ["rivers", "bridges", "owls", "tea", "glass", "maps", "bells", "salt"]
    rows = [_record(i, f"Write about {t}.", f"{t.capitalize()} are " + " ".join(
        [t, "and", "light"] * 12) + ".") for i, t in enumerate(topics)]
    rows.append(_record(90, "Say nothing.", "   "))                    # empty_assistant
    rows.append(_record(91, "Write a book.", "word " * 3000))           # too_long at 512
    w = storage.DatasetWriter(uri)
    w.write(pa.Table.from_pylist(rows, schema=LONGWRITER))
    w.commit()
    w.write(pa.Table.from_pylist([_record(99, "Orphan?", "never listed")], schema=LONGWRITER))
    return uri  # part-00001 exists but is not in the manifest


def _cfg(model, data, out, *extra) -> SFTConfig:
    return load_config(SFTConfig, TINY_YAML, [f"model={model}", f"data={data}",
                                              f"output={out}", "progress=false", *extra])


def _run_with_kill(cfg: SFTConfig) -> tuple[dict, dict]:
    killed: dict = {}
    t = threading.Thread(target=kill_a_worker_after_checkpoint, args=(cfg.output, killed))
    t.start()
    try:
        return run_sft(cfg), killed
    finally:
        t.join()


def test_two_workers_on_s3_survive_a_killed_worker(ray_local, tiny_narrow_model, curated, tmp_path):
    out = f"{BUCKET}/sft-{tmp_path.name}/run"
    manifest, killed = _run_with_kill(_cfg(tiny_narrow_model, curated, out, "max_failures=2"))
    assert killed, "no worker was killed (the run ended before its first checkpoint?)"
    hist = [__import__("json").loads(x) for x in
            storage.read_bytes(f"{out}/metrics.jsonl").decode().splitlines()]
    steps = [h["step"] for h in hist]
    # the global step went on from the checkpoint: every step once, none restarted from 1
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == manifest["final_metrics"][
        "steps"]
    assert manifest["resumed_from"] and all(s % 2 == 0 and s > 0 for s in
                                            manifest["resumed_from"])
    # it memorizes: the loss falls by more than half
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"], (hist[0]["loss"], hist[-1]["loss"])
    # only the committed part was read; bad rows are rejects with reasons
    data = manifest["data"]
    assert data["rows_kept"] == 8 and data["reject_reasons"] == {"empty_assistant": 1,
                                                                 "too_long": 1}
    rejects = storage.read_dataset(f"{out}/_rejects").to_pylist()
    assert {(r["id"], r["reason"].split(":")[0], r["line"]) for r in rejects} == {
        ("r90", "empty_assistant", 9), ("r91", "too_long", 10)}
    assert all(r["file"].endswith("part-00000.parquet") for r in rejects)
    # export: HF directory with the manifest written last
    files = storage.load_manifest(f"{out}/model")["files"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= set(
        files)
    from huggingface_hub import ModelCard  # the model card, beside the weights
    card = ModelCard(storage.read_bytes(f"{out}/model/README.md").decode())
    assert card.data.base_model == tiny_narrow_model and card.data.license == "unknown"
    assert f"| steps | {manifest['final_metrics']['steps']} |" in card.text
    # a finished job rerun does nothing
    again = run_sft(_cfg(tiny_narrow_model, curated, out, "max_failures=2"))
    assert again["skipped"] and again["final_metrics"] == manifest["final_metrics"]


def test_failed_run_resumes_on_rerun_and_export_loads_in_vllm(ray_local, tiny_narrow_model, curated,
                                                               tmp_path):
    out = f"{BUCKET}/sft-{tmp_path.name}/run"
    with pytest.raises(TrainError, match="training failed"):
        _run_with_kill(_cfg(tiny_narrow_model, curated, out, "max_failures=0"))
    assert storage.load_manifest(f"{out}/model") is None  # nothing written as finished
    manifest = run_sft(_cfg(tiny_narrow_model, curated, out, "max_failures=0"))
    assert manifest["resumed_from"] and manifest["resumed_from"][0] >= 2
    hist = storage.read_bytes(f"{out}/metrics.jsonl").decode().splitlines()
    assert len(hist) == manifest["final_metrics"]["steps"]

    # the exported model serves in the project's vLLM engine
    c = chat_with_export(f"{out}/model", tmp_path / "model", "sft-export")
    assert c.output_tokens > 0 and c.text
