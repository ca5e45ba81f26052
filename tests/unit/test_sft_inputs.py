"""Bad input to the SFT job: one clear line and exit 2 for what is fatal (checked before any
worker or Ray starts), a reject with its reason for what is per row."""
from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from dataset_builder.core import storage
from ray_jobs.common import cli
from ray_jobs.sft import main
from train.config import SFTConfig
from train.data import check_messages, encode, encode_rows
from train.sft import TrainError


def _run(capsys, *sets) -> tuple[int, str]:
    rc = cli(SFTConfig, main, ["--config", "ray_jobs/configs/sft_tiny.yaml", "--set",
                               "num_workers=0", *(a for s in sets for a in ("--set", s))],
             expected=(TrainError,))
    return rc, capsys.readouterr().err.strip()


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}


@pytest.mark.parametrize("case,expected", [
    ("missing_model", "error: model not found: "),
    ("empty_data", "error: training data is empty: "),
    ("no_manifest", "is a directory without _manifest.json"),
    ("missing_data", "error: input not found: "),
    ("all_too_long", "all rejected ({'too_long': 2}; max_length 16)"),
    ("dead_endpoint", "error: cannot reach storage for s3://"),
])
def test_fatal_input_is_one_line_and_exit_2(case, expected, capsys, tmp_path, tiny_narrow_model,
                                            monkeypatch):
    out = str(tmp_path / "out")
    data = _jsonl(tmp_path / "d.jsonl", [GOOD, GOOD])
    sets = {"missing_model": [f"model={tmp_path}/nope", f"data={data}"],
            "empty_data": [f"model={tiny_narrow_model}",
                           f"data={_jsonl(tmp_path / 'empty.jsonl', [])}"],
            "no_manifest": [f"model={tiny_narrow_model}", f"data={tmp_path}"],
            "missing_data": [f"model={tiny_narrow_model}", f"data={tmp_path}/none.jsonl"],
            "all_too_long": [f"model={tiny_narrow_model}", f"data={data}", "max_length=16"],
            "dead_endpoint": [f"model={tiny_narrow_model}", f"data={data}",
                              "output=s3://bucket/out", "storage.endpoint_url=http://127.0.0.1:9"],
            }[case]
    if case == "dead_endpoint":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    rc, err = _run(capsys, *([f"output={out}"] + sets if case != "dead_endpoint" else sets))
    assert rc == 2, err
    assert expected in err and len(err.splitlines()) == 1, err
    assert not storage.exists(f"{out}/model")  # nothing looks finished


@pytest.mark.parametrize("messages,reason", [
    (None, "no_messages"),
    ([], "no_messages"),
    ([{"role": "user", "content": "a"}], "missing_assistant"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}], "empty_assistant"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": 3}], "non_string_content"),
    ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"},
      {"role": "assistant", "content": "c"}], "wrong_roles"),
    ([{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}], "wrong_roles"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
      {"role": "user", "content": "c"}], "wrong_roles"),
    ([{"role": "user"}, {"role": "assistant", "content": "b"}], "bad_turn"),
])
def test_bad_rows_have_reasons(messages, reason):
    ok, why = check_messages(messages)
    assert not ok and why.split(":")[0] == reason


def test_targets_are_exactly_the_assistant_turns(tiny_narrow_model):
    tok = AutoTokenizer.from_pretrained(tiny_narrow_model)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "One?"},
            {"role": "assistant", "content": "First answer."}, {"role": "user", "content": "2?"},
            {"role": "assistant", "content": "Second answer."}]
    ids, mask = encode(msgs, tok)
    targets = tok.decode([i for i, m in zip(ids, mask) if m])
    assert targets == "First answer.<|im_end|>\nSecond answer.<|im_end|>\n"
    assert tok.decode(ids) == tok.apply_chat_template(msgs, tokenize=False)


def test_rows_over_max_length_are_rejected_not_truncated(tiny_narrow_model):
    tok = AutoTokenizer.from_pretrained(tiny_narrow_model)
    rows = [{**GOOD, "_file": "f.jsonl", "_line": 1, "id": "a"},
            {"messages": [{"role": "user", "content": "x"},
                          {"role": "assistant", "content": "long " * 200}],
             "_file": "f.jsonl", "_line": 2, "id": "b"},
            {"prompt": "p", "response": "r", "_file": "g.parquet", "_line": 7, "id": "c"}]
    kept, rejects = encode_rows(rows, tok, max_length=64)
    assert [k["id"] for k in kept] == ["a", "c"]
    [r] = rejects
    assert (r["id"], r["file"], r["line"], r["stage"]) == ("b", "f.jsonl", 2, "sft_data")
    assert r["reason"].startswith("too_long: ") and "> max_length 64" in r["reason"]


def test_local_paths_become_absolute_for_workers(tmp_path, monkeypatch):
    """Ray Train workers run in their own working directory: relative paths must not reach
    them (a relative output once made every worker read packs that were not there)."""
    from train.sft import absolute
    monkeypatch.chdir(tmp_path)
    cfg = SFTConfig(model="./m", data="data/x.jsonl", output="./out")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.jsonl").write_text("")
    got = absolute(cfg)
    assert (got.model, got.data, got.output) == (f"{tmp_path}/m", f"{tmp_path}/data/x.jsonl",
                                                 f"{tmp_path}/out")
    s3 = absolute(SFTConfig(model="org/name", data="s3://b/d", output="s3://b/o"))
    assert (s3.model, s3.data, s3.output) == ("org/name", "s3://b/d", "s3://b/o")
