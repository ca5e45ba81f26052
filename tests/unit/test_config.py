import dataclasses
import typing

import pytest

from dataset_builder.core.config import ConfigError, describe, load_config
from dataset_builder.generation import GenerateConfig


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_yaml_and_overrides(tmp_path):
    path = _write(tmp_path, "input: a.jsonl\noutput: out\nengine:\n  max_model_len: 2048\n")
    cfg = load_config(GenerateConfig, path, ["engine.max_num_seqs=7", "agentwrite.layout=append",
                                             "agentwrite.temperature=1"])
    assert cfg.engine.max_model_len == 2048 and cfg.engine.max_num_seqs == 7
    assert cfg.agentwrite.layout == "append"
    assert cfg.agentwrite.temperature == 1.0 and isinstance(cfg.agentwrite.temperature, float)


def test_unknown_key_names_the_key(tmp_path):
    path = _write(tmp_path, "input: a\noutput: b\nengine:\n  max_model_lenn: 5\n")
    with pytest.raises(ConfigError, match=r"engine\.max_model_lenn"):
        load_config(GenerateConfig, path)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"engine\.max_num_seqs: expected int, got str"):
        load_config(GenerateConfig, None, ["input=a", "output=b", "engine.max_num_seqs=lots"])
    with pytest.raises(ConfigError, match=r"agentwrite\.layout"):
        load_config(GenerateConfig, None, ["input=a", "output=b", "agentwrite.layout=sideways"])
    with pytest.raises(ConfigError, match=r"engine.max_replicas: expected int, got bool"):
        load_config(GenerateConfig, None, ["input=a", "output=b", "engine.max_replicas=true"])

    with pytest.raises(ConfigError, match=r"write_concurrency must be >= 1, got 0"):
        load_config(GenerateConfig, None, ["input=a", "output=b", "write_concurrency=0"])
    with pytest.raises(ConfigError, match=r"engine.rows_per_task must be >= 1, got 0"):
        load_config(GenerateConfig, None, ["input=a", "output=b", "engine.rows_per_task=0"])
    with pytest.raises(ConfigError, match=r"engine.max_queued_tasks must be >= 0, got -1"):
        load_config(GenerateConfig, None, ["input=a", "output=b", "engine.max_queued_tasks=-1"])


def test_missing_required_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="missing required config key input"):
        load_config(GenerateConfig, None, ["output=b"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(GenerateConfig, str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="key=value"):
        load_config(GenerateConfig, None, ["input"])


def _all_fields(cls):
    for f in dataclasses.fields(cls):
        yield cls, f
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _all_fields(tp)


def test_every_field_has_help():
    missing = [f"{c.__name__}.{f.name}" for c, f in _all_fields(GenerateConfig)
               if not f.metadata.get("help")]
    assert missing == []
    lines = describe(GenerateConfig)
    assert any(line.startswith("engine.model ") for line in lines)


def test_every_shipped_config_is_named_for_its_job_and_loads_there():
    """`<job>.yaml` or `<job>_<size>.yaml`, where ray_jobs/<job>.py runs it: a config's name
    says which job takes it, and it loads into that job's config class."""
    import importlib
    from pathlib import Path
    configs = sorted(Path("ray_jobs/configs").glob("*.yaml"))
    jobs = {p.stem for p in Path("ray_jobs").glob("*.py")} - {"__init__", "common"}
    assert len(configs) >= 15
    for path in configs:
        named = [j for j in jobs if path.stem == j or path.stem.startswith(j + "_")]
        assert named, f"{path.name}: not named <job>.yaml or <job>_<size>.yaml (jobs: {jobs})"
        module = importlib.import_module(f"ray_jobs.{max(named, key=len)}")
        cls = module.CONFIG
        # required fields a user sets on the command line
        extra = [f"{k}=x" for k in ("input", "output", "data", "model", "base_model")
                 if k in {f.name for f in dataclasses.fields(cls)}
                 and f"\n{k}:" not in "\n" + path.read_text()]
        cfg = load_config(cls, str(path), extra)
        assert dataclasses.is_dataclass(cfg), path


def test_yaml_boolean_words_map_back_to_literal_options():
    from dataset_builder.curate.config import CurateConfig
    cfg = load_config(CurateConfig, None, ["input=a", "output=b", "filters.truncation=off"])
    assert cfg.filters.truncation == "off"


def test_nothing_in_the_repository_points_outside_it():
    """A clone (and a submitted working dir) has no shared folder beside it: docs live in
    docs/."""
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True).stdout
    needle = "../" + "shared"
    bad = [f for f in files.split() if (root / f).is_file() and f.endswith(
        (".py", ".md", ".yaml", ".toml", "Makefile")) and needle in (root / f).read_text(
        errors="ignore")]
    assert bad == []


def test_vllm_kwargs_pass_through_but_never_repeat_a_field():
    cfg = load_config(GenerateConfig, None, ["input=a", "output=b",
                                             "engine.vllm_kwargs={quantization: fp8}"])
    assert cfg.engine.vllm_kwargs == {"quantization": "fp8"}
    with pytest.raises(ConfigError, match=r"engine\.vllm_kwargs\.max_model_len duplicates "
                                          r"engine\.max_model_len"):
        load_config(GenerateConfig, None, ["input=a", "output=b",
                                           "engine.vllm_kwargs={max_model_len: 4096}"])
    with pytest.raises(ConfigError, match="engine.vllm_kwargs is for backend vllm"):
        load_config(GenerateConfig, None, ["input=a", "output=b", "engine.backend=openai",
                                           "engine.vllm_kwargs={quantization: fp8}"])


def test_progress_settings_do_not_change_the_config_hash():
    """Turning progress lines off must not make a finished output look made by another config
    (a trained model would be 'trained with another config', a pipeline stage rerun)."""
    from dataset_builder.core.config import config_hash, load_config
    from dataset_builder.generation import GenerateConfig
    base = ["input=x", "output=y"]
    a = load_config(GenerateConfig, None, base)
    b = load_config(GenerateConfig, None, [*base, "progress=false", "progress_interval_s=5",
                                           "write_num_cpus=1", "write_concurrency=8",
                                           "engine.max_queued_tasks=5"])
    c = load_config(GenerateConfig, None, [*base, "limit=3"])
    assert config_hash(a) == config_hash(b) != config_hash(c)
