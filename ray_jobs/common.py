"""What every `ray_jobs/` entrypoint shares: argument parsing, config loading, clean failures.

Each job is `main(cfg)` plus `cli(cls, main)`: `--config file.yaml --set a.b=value ...`,
`--help-config` lists every field with its help text. Expected failures (bad config, missing
input, unreachable store, bad model path) print one line and exit 2 instead of a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from dataset_builder.core import ray_private, storage
from dataset_builder.core.config import ConfigError, describe, load_config
from dataset_builder.core.logs import library_logging
from dataset_builder.core.storage import save_resolved_config  # noqa: F401 (the jobs use it)
from dataset_builder.llm.base import EngineError

EXPECTED = (ConfigError, storage.StorageError, EngineError, FileNotFoundError)


def cli(cls, main: Callable, argv: list[str] | None = None, description: str = "",
        expected: tuple = (), dry_run: Callable | None = None) -> int:
    """`expected`: the job's own error types that also end in one line and exit 2.
    `dry_run(cfg)`: what `--dry-run` runs instead of `main` (the job has one)."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config file (ray_jobs/configs/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field, e.g. --set engine.model=/models/x")
    p.add_argument("--help-config", action="store_true", help="list every config field and exit")
    if dry_run is not None:
        p.add_argument("--dry-run", action="store_true", help="check the config and input and "
                       "print what the run would do and cost; start nothing")
    args = p.parse_args(argv)
    if args.help_config:
        print("\n".join(describe(cls)))
        return 0
    library_logging()
    try:
        cfg = load_config(cls, args.config, args.set)
        (dry_run if getattr(args, "dry_run", False) else main)(cfg)
    except (*EXPECTED, *expected) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def init_ray() -> None:
    """Connect to the cluster `ray job submit` points at (RAY_ADDRESS), else start a fresh local
    Ray. "local" (not auto-detect) so a stale cluster address file left on the machine is never
    joined; set RAY_ADDRESS=auto to join a running `ray start` cluster. Ray 2.60 rewrites
    _node_ip_address=127.0.0.1 to the machine's address and its servers listen on all
    interfaces whatever is passed (DESIGN.md §6); token authentication guards them.

    Ray's own chatter goes to its session log directory, named in one line here: Ray Data's
    progress lines (ray_data_logging.yaml), the token-auth notice and the start banner."""
    import logging
    import os

    import ray
    if ray.is_initialized():
        return
    _route_ray_data_logs()
    address = os.environ.get("RAY_ADDRESS")
    extra = {} if address else {"address": "local", "_node_ip_address": "127.0.0.1"}
    quiet = [logging.getLogger(n) for n in ray_private.NOISY_INIT_LOGGERS]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        ctx = ray.init(**({"address": address} if address else {}), log_to_driver=False, **extra)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    logs = ray_private.session_log_dir()
    where = address or "a local Ray (token auth on: the token is ~/.ray/auth_token)"
    print(f"ray: {where}; dashboard {ctx.dashboard_url or '-'}; Ray's own logs: {logs}",
          file=sys.stderr)


def _route_ray_data_logs() -> None:
    """Ray Data reads RAY_DATA_LOGGING_CONFIG when it is imported; if it already was, it is
    configured again (a user's own setting wins)."""
    import os
    from pathlib import Path
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG",
                          str(Path(__file__).with_name("ray_data_logging.yaml")))
    if "ray.data" in sys.modules:
        ray_private.reconfigure_ray_data_logging()
