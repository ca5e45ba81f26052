"""Scale-out: a 3-node Ray cluster on this machine (ray.cluster_utils.Cluster), 2 engine actors
spread over nodes, one generation job. Runs in a subprocess because a process can join only one
Ray cluster and the test session already holds one."""
import json
import subprocess
import sys

import pytest

from dataset_builder import storage

pytestmark = pytest.mark.integration

SCRIPT = r"""
import json, sys
import ray
from ray.cluster_utils import Cluster
from dataset_builder.config import load_config
from dataset_builder.generate import GenerateConfig, run

if __name__ == "__main__":
    model, inp, out = sys.argv[1:4]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cfg = load_config(GenerateConfig, "ray_jobs/configs/tiny.yaml", [
        f"engine.model={model}", f"input={inp}", f"output={out}", "num_engines=2",
        "progress=false", "engine.cpu_kvcache_gib=1", "in_flight=4"])
    stats = run(cfg)
    print("RESULT " + json.dumps({"nodes": len(ray.nodes()), "engines": stats["engines"],
                                  "rows": stats["rows_in_output"]}))
    ray.shutdown()
    cluster.shutdown()
"""


def test_engines_on_two_nodes_complete_output(tiny_model, tmp_path):
    prompts = [f"Write a {2000 + 250 * k}-word report on city number {k}." for k in range(8)]
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(json.dumps({"prompt": p}) for p in prompts))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", SCRIPT, tiny_model, str(inp), str(out)],
                       capture_output=True, text=True, timeout=900)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, (r.stdout + r.stderr)[-4000:]
    res = json.loads(line[0][7:])
    assert res["nodes"] == 3
    busy = {e["node_id"] for e in res["engines"] if e["requests"] > 0}
    assert len(busy) == 2  # both engines, on two different nodes, did work
    ids = storage.read_dataset(str(out / "generations")).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == res["rows"] == len(prompts)
