"""Curation end to end on a local Ray: a fixture generation dataset with good rows, duplicates
and every kind of bad row -> LongWriter-6k shards, rejects, stats and report, locally and on S3
(moto). Run: pytest tests/integration/test_curate_pipeline.py -q
"""
from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from dataset_builder.core import storage
from dataset_builder.core.config import load_config
from dataset_builder.core.records import GENERATION
from dataset_builder.curate import shards
from dataset_builder.curate.config import CurateConfig
from dataset_builder.curate.pipeline import run_curation

rng = random.Random(7)
VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "zu",
                            "bo", "ga") for b in ("ran", "tel", "mox", "pid", "sun", "vek",
                                                  "lor", "dan", "fis", "gum", "hap", "jor")]
HANZI = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你"


def words(n: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n)).capitalize() + "."


def hanzi(n: int) -> str:
    return "".join(rng.choice(HANZI) for _ in range(n)) + "。"


def gen_row(rid: str, prompt: str, paragraphs: list[str], required: int | None = 400,
            finish: list[str] | None = None, lang: str = "en") -> dict:
    response = "\n\n".join(paragraphs)
    return {"id": rid, "prompt": prompt, "source": "fixture", "lang": lang,
            "required_words": required,
            "plan": [{"main_point": f"point {i}", "words": 80} for i in range(len(paragraphs))],
            "paragraphs": paragraphs, "response": response, "response_words": 0,
            "model": "fixture-model", "config_hash": "abc", "layout": "paper",
            "plan_attempts": 1, "step_prompt_tokens": [1] * (len(paragraphs) + 1),
            "step_output_tokens": [1] * (len(paragraphs) + 1),
            "step_cached_tokens": [0] * (len(paragraphs) + 1),
            "finish_reasons": finish or ["stop"] * (len(paragraphs) + 1), "resumed_steps": 0}


def edit(text: str, rate: float) -> str:
    toks = text.split()
    return " ".join(rng.choice(VOCAB) if rng.random() < rate else t for t in toks)


def build_fixture(uri: str, cfg=None) -> dict[str, str]:
    """Write the fixture generation dataset; returns {row id: expected reason or 'kept'}."""
    expect: dict[str, str] = {}
    good = []
    for i in range(12):
        good.append(gen_row(f"good-{i:02d}", f"Write about {words(30)}",
                            [words(80) for _ in range(5)]))
        expect[f"good-{i:02d}"] = "kept"
    zh = [gen_row(f"zh-{i}", "请写一篇文章：" + hanzi(30), [hanzi(90) for _ in range(5)],
                  lang="zh") for i in range(2)]
    expect.update({r["id"]: "kept" for r in zh})
    art = gen_row("art-0", f"Write about {words(30)}", [words(80) for _ in range(5)])
    art["paragraphs"][0] = ("# Title\n\nParagraph 1 - Main Point: point 0 - Word Count: 80 words"
                            "\n" + art["paragraphs"][0] + " (Word count: 80)")
    art["paragraphs"][1] = "# Title\n\n**Paragraph 2:** " + art["paragraphs"][1]
    expect["art-0"] = "kept"
    g0, g1, g2, g3 = good[:4]
    rows = good + zh + [art]
    rows.append(gen_row("zz-exact-prompt", g0["prompt"].upper(),
                        [words(80) for _ in range(5)]))
    expect["zz-exact-prompt"] = "exact_duplicate_prompt"
    rows.append(gen_row("zz-exact-resp", f"Write about {words(30)}",
                        [p.lower().replace(" ", "  ") for p in g1["paragraphs"]]))
    expect["zz-exact-resp"] = "exact_duplicate_response"
    rows.append(gen_row("zz-near-resp", f"Write about {words(30)}",
                        [edit(p, 0.01) for p in g2["paragraphs"]]))
    expect["zz-near-resp"] = "near_duplicate_response"
    near_prompt = g3["prompt"].split()
    near_prompt[15] = "different"
    rows.append(gen_row("zz-near-prompt", " ".join(near_prompt), [words(80) for _ in range(5)]))
    expect["zz-near-prompt"] = "near_duplicate_prompt"
    # Same id as good-00 (and its prompt), another response: one of the two goes (duplicate_id).
    rows.append(gen_row("good-00", g0["prompt"], [words(80) for _ in range(5)]))
    rows.append(gen_row("bad-truncated", f"Write about {words(30)}",
                        [words(80) for _ in range(5)], finish=["stop"] * 5 + ["length"]))
    expect["bad-truncated"] = "truncated"
    rows.append(gen_row("bad-refusal", f"Write about {words(30)}",
                        ["I'm sorry, but I can't help with that request."] +
                        [words(80) for _ in range(4)]))
    expect["bad-refusal"] = "refusal"
    rows.append(gen_row("bad-lang", "请写一篇文章：" + hanzi(30), [words(80) for _ in range(5)],
                        lang="zh"))
    expect["bad-lang"] = "language_mismatch"
    loop = " ".join(["the model repeats this very same sentence over and over"] * 40)
    rows.append(gen_row("bad-repeat", f"Write about {words(30)}",
                        [words(80), loop, words(80), words(80)]))
    expect["bad-repeat"] = "repetition"
    p = words(120)
    rows.append(gen_row("bad-dup-para", f"Write about {words(30)}", [p, words(80), p, p]))
    expect["bad-dup-para"] = "duplicate_paragraphs"
    rows.append(gen_row("bad-empty-para", f"Write about {words(30)}",
                        [words(100), "Paragraph 2 - Main Point: x - Word Count: 80 words",
                         words(100), words(100), words(100)]))
    expect["bad-empty-para"] = "empty_paragraph"
    rows.append(gen_row("bad-short", f"Write about {words(30)}", [words(40), words(40)],
                        required=None))
    expect["bad-short"] = "too_short"
    rows.append(gen_row("bad-adherence", f"Write about {words(30)}",
                        [words(80) for _ in range(5)], required=3000))
    expect["bad-adherence"] = "length_adherence"
    rows.append(gen_row("bad-empty-resp", f"Write about {words(30)}", [""], required=None))
    rows[-1]["response"] = ""
    expect["bad-empty-resp"] = "empty_response"
    rows.append(gen_row("bad-huge", f"Write about {words(30)}", ["x" * 1_100_000]))
    expect["bad-huge"] = "response_too_long"
    rows.append(gen_row("bad-fffd", f"Write about {words(30)}",
                        [words(80) + " \ufffd\ufffd broken"] + [words(80) for _ in range(4)]))
    expect["bad-fffd"] = "broken_utf8"

    writer = storage.DatasetWriter(uri, cfg)
    writer.write(rows, GENERATION)
    # A part with wrong types and missing fields (a different schema from an older writer).
    writer.write(pa.table({
        "id": ["bad-type-req", "bad-no-prompt", "bad-type-paras"],
        "prompt": [f"Write about {words(30)}", None, f"Write about {words(30)}"],
        "required_words": ["lots", "400", "400"],
        "paragraphs": [[words(80)], [words(80)], None],
        "response": [words(80), words(80), None],
    }))
    expect.update({"bad-type-req": "bad_type", "bad-no-prompt": "missing_field",
                   "bad-type-paras": "missing_field"})
    # A part with invalid UTF-8 bytes inside a string column (written without validation).
    broken = pa.array([b"Write about \xff\xfe things " + words(20).encode()], pa.binary())
    writer.write(pa.table({"id": ["bad-bytes"], "prompt": broken.view(pa.string()),
                           "paragraphs": [[words(80)]]}))
    expect["bad-bytes"] = "broken_utf8"
    writer.commit()
    return expect


def small_cfg(inp: str, out: str, **over) -> CurateConfig:
    overrides = [f"input={inp}", f"output={out}", "filters.min_response_words=300",
                 "rows_per_shard=4", *(f"{k}={v}" for k, v in over.items())]
    return load_config(CurateConfig, None, overrides)


def check_output(cfg: CurateConfig, expect: dict[str, str], stats: dict) -> None:
    import datasets
    import polars as pl

    st = cfg.storage
    manifest = storage.load_manifest(cfg.output, st)
    funnel = stats["funnel"]
    assert funnel["rows_in"] == len(expect) + 1       # + the duplicate id row
    assert funnel["rows_in"] == funnel["rows_out"] + funnel["rejected"]
    kept_expected = sorted(k for k, v in expect.items() if v == "kept")
    assert funnel["rows_out"] == len(kept_expected) == manifest["rows"]
    assert all(f["rows"] <= 4 for f in manifest["files"])
    assert [f["rows"] for f in manifest["files"]][:-1] == [4] * (len(manifest["files"]) - 1)

    rejects = storage.read_dataset(storage.join(cfg.output, shards.REJECTS_DIR), st)
    assert rejects.num_rows == funnel["rejected"]
    assert all(rejects["reason"].to_pylist()) and all(rejects["stage"].to_pylist())
    got = dict(zip(rejects["id"].to_pylist(), rejects["reason"].to_pylist()))
    for rid, reason in expect.items():
        if reason != "kept":
            assert got.get(rid) == reason, (rid, got.get(rid))
    assert "duplicate_id" in got.values()

    # the dataset card lists exactly the committed parts (huggingface_hub parses it)
    from huggingface_hub import DatasetCard
    card = DatasetCard(storage.read_bytes(storage.join(cfg.output, "README.md"), st).decode())
    [conf] = card.data.configs
    assert conf["data_files"][0]["path"] == [f["path"] for f in manifest["files"]]
    assert card.data.license == "unknown" and "terms of the model that wrote" in card.text
    assert f"{funnel['rows_in']} rows in, {funnel['rows_out']} kept" in card.text
    # every committed shard loads with datasets and polars; only committed ones
    files = [storage.join(cfg.output, f["path"]) for f in manifest["files"]]
    opts = storage.storage_options(cfg.output, st)
    hf = datasets.load_dataset("parquet", data_files=files, split="train",
                               storage_options=opts or None)
    assert sorted(hf["id"]) == kept_expected
    if "://" not in cfg.output:   # the directory itself, through its card's configs
        assert sorted(datasets.load_dataset(cfg.output, split="train")["id"]) == kept_expected
    first = hf[0]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant"]
    assert first[1]["content"] and "Paragraph 1 -" not in first[1]["content"]
    frames = [pl.read_parquet(storage.read_bytes(f, st)) for f in files]
    df = pl.concat(frames)
    assert df["id"].to_list() == sorted(df["id"].to_list())          # sorted by id
    art = df.filter(pl.col("id") == "art-0")["messages"].to_list()[0][1]["content"]
    assert "Main Point" not in art and "Word count" not in art and art.count("# Title") == 1
    assert set(df["lang"].to_list()) == {"en", "zh"}

    for name in ("report.md", "report.json", "words_hist.png", "required_vs_produced.png",
                 shards.STATS, "_config.yaml"):
        assert storage.exists(storage.join(cfg.output, name), st), name
    rep = storage.read_json(storage.join(cfg.output, "report.json"), st)
    assert rep["funnel"] == funnel
    assert rep["dedup"]["near_duplicate_response"]["dropped"] >= 1
    assert "| rows in |" in storage.read_bytes(storage.join(cfg.output, "report.md"),
                                               st).decode()


def _snapshot(cfg) -> tuple[str, dict]:
    m = storage.read_bytes(storage.join(cfg.output, storage.MANIFEST), cfg.storage)
    return m.decode(), {f["path"]: f["sha256"] for f in json.loads(m)["files"]}


@pytest.mark.integration
def test_curation_local(ray_local, tmp_path, monkeypatch):
    inp, out = str(tmp_path / "generations"), str(tmp_path / "longwriter")
    expect = build_fixture(inp)
    cfg = small_cfg(inp, out)

    # A crash before the commit point leaves nothing visible ...
    def crash(self, **extra):
        raise RuntimeError("simulated crash")
    with monkeypatch.context() as m:
        m.setattr(storage.DatasetWriter, "commit", crash)
        with pytest.raises(RuntimeError, match="simulated"):
            run_curation(cfg)
    assert storage.load_manifest(out) is None
    assert list((tmp_path / "longwriter").glob("part-*.parquet"))   # written, not visible

    # ... and the rerun completes from scratch.
    stats = run_curation(cfg)
    assert not stats.get("skipped")
    check_output(cfg, expect, stats)
    manifest, files = _snapshot(cfg)
    assert set(files) == {p.name for p in (tmp_path / "longwriter").glob("part-*.parquet")}

    # Idempotent: same input, config and code -> skipped, nothing rewritten.
    again = run_curation(cfg)
    assert again["skipped"] and again["funnel"] == stats["funnel"]
    assert _snapshot(cfg) == (manifest, files)

    # Recomputing from scratch gives byte-identical shards (deterministic order and names).
    (tmp_path / "longwriter" / storage.MANIFEST).unlink()
    run_curation(cfg)
    assert _snapshot(cfg)[1] == files

    # A part written but not committed is not visible to manifest readers.
    before = storage.read_dataset(out).num_rows
    storage.DatasetWriter(out).write(pa.table({"id": ["ghost"]}))
    assert storage.read_dataset(out).num_rows == before
    assert "ghost" not in storage.read_dataset(out)["id"].to_pylist()


@pytest.mark.integration
def test_curation_s3(ray_local, moto_s3, tmp_path):
    inp, out = "s3://test-bucket/cur/generations", "s3://test-bucket/cur/longwriter"
    expect = build_fixture(inp)
    cfg = small_cfg(inp, out)
    stats = run_curation(cfg)
    check_output(cfg, expect, stats)
    assert run_curation(cfg)["skipped"]


@pytest.mark.integration
def test_curation_empty_and_all_rejected(ray_local, tmp_path):
    storage.DatasetWriter(str(tmp_path / "empty")).commit()
    stats = run_curation(small_cfg(str(tmp_path / "empty"), str(tmp_path / "o1")))
    assert stats["funnel"]["rows_in"] == 0 == stats["funnel"]["rows_out"] and not stats["files"]
    assert storage.load_manifest(str(tmp_path / "o1"))["rows"] == 0

    inp = str(tmp_path / "gen")
    expect = build_fixture(inp)
    stats = run_curation(small_cfg(inp, str(tmp_path / "o2"),
                                   **{"filters.min_response_words": 10**6}))
    assert stats["funnel"]["rows_out"] == 0
    assert stats["funnel"]["rejected"] == len(expect) + 1
    assert (tmp_path / "o2" / "report.md").exists()
    assert storage.read_dataset(str(tmp_path / "o2" / shards.REJECTS_DIR)).num_rows == \
        len(expect) + 1


@pytest.mark.integration
def test_job_console_is_one_summary_not_ray_chatter(ray_local, tmp_path):
    """The curation job as a user runs it (stderr not a terminal): Ray Data's progress lines go
    to the log directory the job names, not to the console."""
    import os
    import subprocess
    import sys

    inp, out = str(tmp_path / "generations"), str(tmp_path / "longwriter")
    build_fixture(inp)
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    env.pop("RAY_DATA_LOGGING_CONFIG", None)
    p = subprocess.run([sys.executable, "-m", "ray_jobs.curate", "--config",
                        "ray_jobs/configs/curate.yaml", "--set", f"input={inp}", "--set",
                        f"output={out}", "--set", "filters.min_response_words=0",
                        "--set", "filters.min_length_score=null",
                        "--set", "progress_interval_s=0.2"],
                       capture_output=True, text=True, env=env, timeout=600)
    console = p.stdout + p.stderr
    assert p.returncode == 0, console[-2000:]
    assert "logging_progress" not in console and "streaming_executor" not in console
    # the job's own progress lines, then its exact last one, before the summary
    prog = [x for x in p.stdout.splitlines() if x.startswith("[curate ")]
    assert len(prog) >= 2 and all(" filtered, " in x for x in prog[:-1]), p.stdout
    assert " done: rows " in prog[-1] and " kept, " in prog[-1], p.stdout
    summary = [x for x in console.splitlines() if not x.startswith(("  kept:", "  ...",
                                                                     "[curate "))]
    assert len(summary) <= 6, console
    assert any(x.startswith("  kept:") for x in console.splitlines()), console
    logs = next(line for line in console.splitlines() if "Ray's own logs: " in line)
    log_dir = logs.split("Ray's own logs: ")[1].strip()
    assert "logging_progress" in open(os.path.join(log_dir, "ray-data", "ray-data.log")).read()
