"""Shared fixtures: one local Ray per test session, one engine per model, one moto S3 server.

Engine starts cost ~30-50 s on 2 cores, so engines are session-scoped and shared by every test
that needs one; tests must not shut them down.
"""
from __future__ import annotations

import os

import pytest

from dataset_builder.llm.server import free_port

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from dataset_builder.models import tiny_model
    return str(tiny_model())


@pytest.fixture(scope="session")
def tiny_narrow_model() -> str:
    """The tiny model at width 128: training tests (small checkpoints, fast steps)."""
    from dataset_builder.models import tiny_model
    return str(tiny_model(hidden=128))


@pytest.fixture(scope="session")
def demo_model() -> str:
    from dataset_builder.models import demo_model
    return str(demo_model())


@pytest.fixture(scope="session")
def ray_local(moto_s3):
    """A local Ray for the whole session (4 logical CPUs so engines and tasks fit side by side).

    Depends on moto_s3 so Ray workers inherit its AWS_* variables.
    """
    import ray
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1",  # keep all traffic on loopback
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_engine_cfg(tiny_model):
    from dataset_builder.llm import EngineConfig
    return EngineConfig(model=tiny_model, max_model_len=4096, max_num_seqs=64, cpu_kvcache_gib=2,
                        num_cpus=1, batch_stats=True)


@pytest.fixture(scope="session")
def tiny_engine(ray_local, tiny_engine_cfg):
    """One EngineActor on the tiny random model, shared by all tests."""
    from dataset_builder.llm.actor import start_engines
    [actor] = start_engines(tiny_engine_cfg, 1, name="tiny-engine")
    return actor


@pytest.fixture(scope="session")
def moto_s3():
    """A real HTTP S3 endpoint on 127.0.0.1 (moto server) with a bucket `test-bucket`.

    Sets AWS_* variables for this process (inherited by Ray workers started afterwards).
    """
    from moto.server import ThreadedMotoServer
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir("test-bucket")
    yield endpoint
    server.stop()
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
