"""Logging setup for the project's own loggers (jobs call it once; engine replicas too)."""
from __future__ import annotations

import logging


def library_logging() -> None:
    """The project's own lines (engine replicas, waits, resends, retries, commits) on stderr
    with a time; Ray's and other libraries' loggers keep their defaults."""
    h = logging.StreamHandler()
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                     "%H:%M:%S"))
    for name in ("dataset_builder", "eval", "train"):
        lg = logging.getLogger(name)
        lg.setLevel(logging.INFO)
        if not lg.handlers:
            lg.addHandler(h)
