"""A model path or hub id checked before any engine or worker starts (library code; the
demo/tiny model builders are development tools in dataset_builder/models.py)."""
from __future__ import annotations

import os

from dataset_builder.core.config import ConfigError


def check_model(path: str, key: str = "model") -> None:
    """One clear line (ConfigError) for a model that cannot load, checked before any engine or
    worker starts: a missing local path, a directory without config.json, or a hub id that is
    neither cached nor reachable (one HEAD request, 5 s, no retries: the hub client's own
    retries took ~15 s and printed a warning per try)."""
    if path and os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")):
        return
    if not path or path.startswith((".", "/", "~")) or os.path.exists(path) or \
            path.count("/") != 1:
        raise ConfigError(f"{key} not found: {path!r} (a local Hugging Face directory with "
                          "config.json, or a hub id org/name)")
    from huggingface_hub import try_to_load_from_cache
    if isinstance(try_to_load_from_cache(path, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise ConfigError(f"{key} {path!r} is not a local directory nor in the hub cache, "
                          "and HF_HUB_OFFLINE is set")
    import httpx
    url = f"{os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}/{path}/resolve/main/config.json"
    try:
        status = httpx.head(url, timeout=5.0).status_code
    except httpx.HTTPError as e:
        raise ConfigError(f"{key} {path!r} is not a local directory and the hub is not "
                          f"reachable ({type(e).__name__})") from None
    if status == 404:
        raise ConfigError(f"{key} {path!r}: no such model on the hub")
