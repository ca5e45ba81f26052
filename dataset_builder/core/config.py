"""Typed configuration: YAML files into dataclasses, `--set a.b=value` overrides, strict checks.

Every field carries `metadata={"help": ...}`; `describe(cls)` prints them. Unknown keys and wrong
types fail with a ConfigError that names the dotted key, so a typo in a 40-line YAML is a
one-line message, not a silent default.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
VERSION = "0.1.0"   # the project's version (dataset_builder.__version__)


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or is missing."""


def under_least(cfg: Any, prefix: str = "", **least: float) -> list[str]:
    """`<prefix><name> must be >= <least>, got <value>` for each named field of `cfg` under
    its lower bound (the one wording of that check, for every job's config)."""
    return [f"{prefix}{k} must be >= {v}, got {getattr(cfg, k)}"
            for k, v in least.items() if getattr(cfg, k) < v]


def check_least(cfg: Any, prefix: str = "", **least: float) -> None:
    """ConfigError naming every field of `cfg` under its lower bound (`under_least`)."""
    problems = under_least(cfg, prefix, **least)
    if problems:
        raise ConfigError("; ".join(problems))


def field(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = None):
    """A dataclass field whose help text is mandatory."""
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _origin_args(tp: Any) -> tuple[Any, tuple]:
    return typing.get_origin(tp), typing.get_args(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; convert int->float only (YAML writes 1 for 1.0)."""
    origin, args = _origin_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is typing.Literal:
        if isinstance(value, bool) and value not in args:
            # YAML 1.1 reads off/no/on/yes as booleans; map them back to a string option.
            words = ("on", "yes", "true") if value else ("off", "no", "false")
            value = next((w for w in words if w in args), value)
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {tp.__name__}, got bool {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type[T], data: dict, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s} (known keys under "
            f"{prefix.rstrip('.') or 'top level'}: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {key}")
    return cls(**kwargs)


def _apply_override(data: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = value


def load_config(cls: type[T], path: str | None = None, overrides: list[str] = ()) -> T:
    """Read YAML at `path` (optional), apply `key=value` overrides, build and check `cls`."""
    data: dict = {}
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    for assignment in overrides or ():
        _apply_override(data, assignment)
    return _build(cls, data)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


# Fields that change how a job is watched or scheduled, never what it produces: left out of
# config_hash, so turning progress lines off does not make a finished output look made by
# another config.
NOT_HASHED = ("progress", "progress_interval_s", "write_num_cpus", "write_concurrency",
              "max_queued_tasks")


def _hashed(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _hashed(v) for k, v in d.items() if k not in NOT_HASHED}
    return d


def config_hash(cfg: Any) -> str:
    """Hash of the resolved config: records which settings produced an output."""
    blob = json.dumps(_hashed(to_dict(cfg)), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def describe(cls: type, prefix: str = "", obj: Any = None) -> list[str]:
    """One line per field, `key (type, default): help`, recursing into sections.

    Nested sections are described from the instance their default_factory builds, so a section
    whose factory differs from its class defaults shows the real defaults.
    """
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if obj is not None:
            default = getattr(obj, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "required"
        if dataclasses.is_dataclass(tp):
            lines += describe(tp, prefix + f.name + ".", default if default != "required" else None)
            continue
        lines.append(f"{prefix}{f.name} ({getattr(tp, '__name__', tp)}, {default!r}): "
                     f"{f.metadata.get('help', '')}")
    return lines


def code_version(*package_dirs: str) -> str:
    """Package version + hash of the given source folders (paths relative to the repo root).

    A content hash, not a git revision: `ray job submit --working-dir` ships no .git, and a
    stage's outputs should be invalidated by a change of its own code only.
    """
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for d in package_dirs or ("dataset_builder",):
        for path in sorted((root / d).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return f"{VERSION}+{h.hexdigest()[:12]}"
