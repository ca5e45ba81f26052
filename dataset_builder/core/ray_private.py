"""Every private or experimental Ray API this project uses, in one place, each with why.

Ray does not promise these across versions (pinned: ray 2.60.0, pyproject.toml). When Ray is
upgraded, this file is the list to check. Ray is imported inside each function: the pure
library and `--help-config` must not pay for importing Ray.
"""
from __future__ import annotations

# Loggers that print Ray's token-auth notice and start banner on every ray.init; the jobs
# lower them to ERROR for the call (the session log directory keeps them).
NOISY_INIT_LOGGERS = ("ray._private.authentication.authentication_token_setup",
                      "ray._private.worker")


def session_log_dir() -> str:
    """The running Ray session's log directory. Why private: the public RuntimeContext has no
    session directory; jobs print it so users know where Ray's own logs went."""
    import os

    import ray
    return os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs")


def reconfigure_ray_data_logging() -> None:
    """Ray Data reads RAY_DATA_LOGGING_CONFIG once, when it is imported. Why private: if it
    was already imported, this is the only way to apply the setting again."""
    from ray.data._internal.logging import configure_logging
    configure_logging()


def kv_put(key: str, value: bytes) -> None:
    """Cluster-wide key-value store (GCS). Why experimental: an engine replica tells the driver
    it is up without a named actor or a round trip through the dataset; nothing public is as
    cheap."""
    from ray.experimental.internal_kv import _internal_kv_put
    _internal_kv_put(key, value, overwrite=True)


def kv_get(key: str) -> bytes | None:
    from ray.experimental.internal_kv import _internal_kv_get
    return _internal_kv_get(key)


def kv_del(key: str) -> None:
    from ray.experimental.internal_kv import _internal_kv_del
    _internal_kv_del(key)


def actor_states() -> dict:
    """{actor id: state dict} read from the GCS. Why private: the public state API
    (ray.util.state) goes through the dashboard, which fails to start when another Ray on the
    machine holds its port (DESIGN.md §6)."""
    from ray._private.state import actors
    return actors()


def validate_cluster_config(config: dict) -> None:
    """Check an autoscaler config (cluster.yaml) as `ray up` would, with its defaults filled
    in. Why private: Ray exposes no public validator; a typo in cluster.yaml otherwise shows
    only when a cluster is launched."""
    import copy

    from ray.autoscaler._private.util import fillout_defaults, validate_config
    validate_config(fillout_defaults(copy.deepcopy(config)))
