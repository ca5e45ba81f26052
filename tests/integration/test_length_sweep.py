"""The length sweep end to end on the tiny model: two arms (a cap and uncut), each cut ->
SFT -> evaluation -> committed results; the report with its arms and plot; a rerun skips
every finished arm."""
import json

import pyarrow as pa
import pytest

from dataset_builder.core import storage
from dataset_builder.core.config import ConfigError, load_config
from dataset_builder.core.records import LONGWRITER
from ray_jobs.length_sweep import CONFIG, run_sweep

pytestmark = pytest.mark.integration


def _rows(n: int) -> list[dict]:
    para = "The river keeps its own time and the town follows it every spring."
    answer = "\n\n".join(" ".join([para] * 3) for _ in range(3))   # 3 paragraphs of 39 words
    return [{"id": f"r{i}", "messages": [
        {"role": "user", "content": f"Write a 2,000-word essay on river towns, part {i}."},
        {"role": "assistant", "content": answer}], "source": "t", "lang": "en",
        "required_words": 2000, "response_words": 117, "length_score": None, "plan": [],
        "model": "m", "config_hash": "h", "layout": "paper"} for i in range(n)]


def _cfg(tmp_path, model, *extra):
    data = tmp_path / "rows"
    if not data.exists():
        w = storage.DatasetWriter(str(data))
        w.write(pa.Table.from_pylist(_rows(3), schema=LONGWRITER))
        w.commit()
    return load_config(CONFIG, "ray_jobs/configs/length_sweep_tiny.yaml", [
        f"base_model={model}", f"data={data}", f"output={tmp_path / 'out'}",
        f"results={tmp_path / 'results'}", *extra])


def test_two_arms_end_to_end_then_a_rerun_skips_them(ray_local, tiny_narrow_model, tmp_path,
                                                     capsys):
    cfg = _cfg(tmp_path, tiny_narrow_model)
    report = run_sweep(cfg)
    arms = {a["name"]: a for a in report["arms"]}
    assert list(arms) == ["cap40", "uncut"]
    for a in arms.values():
        assert a["n"] == 2 + 2 and a["steps"] == 3          # 2 prompts + 2 ruler; 3 rows, 1 each
        assert a["eos_share"] is not None and a["by_required"]
        assert set(a) >= {"cap_words", "median_words_2k_plus", "distinct_4gram", "S_l_2k_plus",
                          "train_tokens", "eot_loss_final"}
    # the cap keeps one 39-word paragraph of three: fewer target tokens, same steps
    assert arms["cap40"]["train_tokens"] < arms["uncut"]["train_tokens"]
    assert arms["cap40"]["cap_words"] == 40 and arms["uncut"]["cap_words"] is None
    results = tmp_path / "results"
    saved = json.loads((results / "arm-cap40.json").read_text())
    assert saved["train"]["answer_words_max"] == 39 and len(saved["samples"]) == 4
    assert (results / "length_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "| cap40 |" in (results / "report.md").read_text()
    assert json.loads((results / "report.json").read_text())["arms"][0]["name"] == "cap40"

    capsys.readouterr()
    again = run_sweep(cfg)
    out = capsys.readouterr().out
    assert out.count("(same key): skipped") == 2 and "running" not in out
    assert again["arms"] == report["arms"]


def test_bad_caps_and_missing_rows_fail_before_any_training(tiny_model, tmp_path):
    from ray_jobs.length_sweep import _check
    with pytest.raises(ConfigError, match="caps must be positive"):
        _check(_cfg(tmp_path, tiny_model, "caps=[0]"))
    with pytest.raises(ConfigError, match=r"arm cap40: 3 of 3 rows left after the cut, fewer "
                                          r"than min_rows 5"):
        _check(_cfg(tmp_path, tiny_model, "min_rows=5"))
    with pytest.raises(ConfigError, match="no committed rows at .*examples/length_sweep/README"):
        _check(_cfg(tmp_path, tiny_model, f"data={tmp_path / 'nothing'}"))
