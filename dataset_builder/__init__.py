"""LongWriter on Ray: data generation (AgentWrite), curation, and the shared layers
(LLM engines, storage, config, text utilities) that train/ and eval/ reuse."""

__version__ = "0.1.0"


def library_logging() -> None:
    """The project's own lines (engine replicas, waits, resends, retries, commits) on stderr
    with a time; Ray's and other libraries' loggers keep their defaults."""
    import logging
    h = logging.StreamHandler()
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                     "%H:%M:%S"))
    for name in ("dataset_builder", "eval", "train"):
        lg = logging.getLogger(name)
        lg.setLevel(logging.INFO)
        if not lg.handlers:
            lg.addHandler(h)
