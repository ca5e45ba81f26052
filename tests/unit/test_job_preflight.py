"""Fatal input to the generation and evaluation jobs is one line and exit 2, found before Ray
or an engine starts (no traceback, no `_config.yaml` that looks like a started run)."""
from __future__ import annotations

import subprocess
import sys

import pytest


def _job(*args, timeout=60):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("model", ["{tmp}/no-such-model", "", "relative/missing-model"])
def test_generate_with_a_bad_model_path_fails_in_one_line(model, tmp_path):
    out = tmp_path / "out"
    r = _job("-m", "ray_jobs.generate", "--config", "ray_jobs/configs/generate_tiny.yaml", "--set",
             f"engine.model={model.format(tmp=tmp_path)}", "--set", f"output={out}")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "error: engine.model " in r.stderr and ("not found" in r.stderr or
                                                   "hub is not reachable" in r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (out / "_config.yaml").exists() and "Started a local Ray" not in r.stderr


def test_generate_checks_its_input_before_starting_ray(tmp_path, tiny_model):
    r = _job("-m", "ray_jobs.generate", "--config", "ray_jobs/configs/generate_tiny.yaml", "--set",
             f"engine.model={tiny_model}", "--set", f"input={tmp_path}/none.jsonl",
             "--set", f"output={tmp_path}/out")
    assert r.returncode == 2 and "error: input not found: " in r.stderr
    assert "Started a local Ray" not in r.stderr


def test_evaluate_with_a_bad_judge_path_fails_in_one_line(tmp_path, tiny_model):
    r = _job("-m", "ray_jobs.evaluate", "--config", "ray_jobs/configs/evaluate_tiny.yaml",
             "--set", f"engine.model={tiny_model}", "--set", f"judge.model={tmp_path}/nope",
             "--set", f"output={tmp_path}/eval")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "error: judge.model not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_help_keeps_the_usage_layout():
    r = _job("-m", "ray_jobs.generate", "--help")
    assert r.returncode == 0
    assert "\n    python -m ray_jobs.generate --config" in r.stdout  # not squashed
