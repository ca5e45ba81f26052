"""cluster.yaml against Ray's own autoscaler schema, and the shape the jobs rely on: a head
with CPUs and no GPU (reads never launch GPU nodes; no engine on the head), GPU workers for
the engine stage's replicas, and room for generate_gpu.yaml's max_replicas."""
import copy

import pytest
import yaml

from dataset_builder.core.config import load_config
from dataset_builder.core.ray_private import validate_cluster_config
from dataset_builder.generation import GenerateConfig


def _cluster() -> dict:
    with open("cluster.yaml") as f:
        return yaml.safe_load(f)


def test_cluster_yaml_passes_rays_schema_and_a_typo_does_not():
    c = _cluster()
    validate_cluster_config(c)
    bad = copy.deepcopy(c)
    bad["available_node_types"]["gpu_worker"]["max_worker"] = 3  # misspelt key
    with pytest.raises(Exception, match="max_worker"):
        validate_cluster_config(bad)


def test_head_has_cpus_no_gpu_and_gpu_workers_fit_the_engine_pool():
    c = _cluster()
    types = c["available_node_types"]
    head = types[c["head_node_type"]]["resources"]
    assert head["CPU"] > 0 and head.get("GPU", 0) == 0
    gpu = load_config(GenerateConfig, "ray_jobs/configs/generate_gpu.yaml", [])
    slots = sum(t["max_workers"] * (t["resources"].get("GPU", 0) // gpu.engine.num_gpus)
                for t in types.values() if t["resources"].get("GPU", 0) >= gpu.engine.num_gpus)
    assert slots >= gpu.engine.max_replicas > gpu.engine.min_replicas >= 1
    assert sum(t.get("max_workers", 0) for n, t in types.items() if n != c["head_node_type"]) \
        >= c["max_workers"]
