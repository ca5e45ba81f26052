"""The engine stage on multi-node clusters on this machine, each test in a subprocess (a process
joins one Ray cluster and the test session already holds one):

- node loss: ray.cluster_utils.Cluster, a head without GPUs and two (logical) GPU nodes, one
  engine replica each; a node is removed in the middle of the run and a new one joins (what
  the autoscaler does). Every id lands once, the lost rows resume from the journal, and no
  journaled step is generated again (its file is never rewritten).
- autoscaling: Ray's fake multinode provider (DESIGN.md §6) with a GPU worker type 0..2; the job
  starts with no worker, the autoscaler adds nodes, the pool grows to 2 replicas (the second
  may still be starting when a quiet machine has finished every row).
"""
import json
import os
import secrets
import subprocess
import sys
import time

import pytest

from dataset_builder.core import storage
from dataset_builder.llm.server import free_port

pytestmark = pytest.mark.integration
BIN = os.path.dirname(sys.executable)

COMMON = r"""
import json, os, sys, threading, time
import ray
from dataset_builder.core.config import load_config
from dataset_builder.generation import GenerateConfig, run

def cfg(model, inp, out, *extra):
    return load_config(GenerateConfig, "ray_jobs/configs/generate_tiny.yaml", [
        f"engine.model={model}", f"input={inp}", f"output={out}", "progress=false",
        "engine.num_gpus=1", "engine.cpu_kvcache_gib=1", "engine.in_flight=4",
        "engine.max_num_seqs=8", "engine.rows_per_task=2", *extra])

def steps(journal):  # every journaled step (one object per instruction) -> its entry
    out = {}
    for d, _, fs in os.walk(journal):
        for f in fs:
            if f.endswith(".json") and not f.startswith("_tmp-"):
                with open(os.path.join(d, f)) as fh:
                    doc = json.load(fh)
                out.update({f"{f}#{k}": json.dumps(v, sort_keys=True)
                            for k, v in doc.get("steps", {}).items()})
    return out

def replicas(states=("ALIVE",)):  # engine replicas (from the GCS: no dashboard needed)
    from dataset_builder.core.ray_private import actor_states
    return [a for a in actor_states().values()
            if "EngineStage" in a["ActorClassName"] and a["State"] in states]

"""

NODE_LOSS = COMMON + r"""
if __name__ == "__main__":
    from ray.cluster_utils import Cluster
    model, inp, out = sys.argv[1:4]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0,
                                                          "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    c = cfg(model, inp, out, "engine.min_replicas=2", "engine.max_replicas=2")
    result, t0, timeline = {}, time.time(), []
    job = threading.Thread(target=lambda: result.update(run(c)))
    job.start()
    journal = out + "/_journal"
    while job.is_alive() and (len(replicas()) < 2 or len(steps(journal)) < 12):
        time.sleep(0.2)
    alive = job.is_alive()
    held = sorted({a["Address"]["NodeID"] for a in replicas()})  # nodes with a replica up
    timeline.append([round(time.time() - t0, 1), f"{len(steps(journal))} steps journaled, "
                     "removing a worker node"])
    cluster.remove_node(workers[0], allow_graceful=False)
    time.sleep(2)
    before = steps(journal)
    cluster.add_node(num_cpus=1, num_gpus=1)
    timeline.append([round(time.time() - t0, 1), "replacement node added"])
    job.join()
    timeline.append([round(time.time() - t0, 1), "job done"])
    after = steps(journal)
    print("RESULT " + json.dumps({"stats": result, "alive_when_killed": alive,
        "journaled_at_kill": len(before), "timeline": timeline,
        "replica_nodes_at_kill": held, "killed_node": workers[0].node_id,
        "rewritten": [p for p in before if after.get(p) != before[p]]}))
    ray.shutdown()
    cluster.shutdown()
"""

AUTOSCALE = COMMON + r"""
if __name__ == "__main__":
    model, inp, out = sys.argv[1:4]
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    t0, timeline, sizes = time.time(), [], []
    stop = threading.Event()
    def watch():
        while not stop.is_set():
            # replicas in the pool: up, or being placed/started on a node the autoscaler adds
            n = [len([x for x in ray.nodes() if x["Alive"]]), len(replicas(
                ("ALIVE", "PENDING_CREATION", "DEPENDENCIES_UNREADY", "RESTARTING")))]
            if not sizes or sizes[-1] != n:
                sizes.append(n)
                timeline.append([round(time.time() - t0, 1), f"{n[0]} nodes, {n[1]} replicas"])
            time.sleep(0.5)
    w = threading.Thread(target=watch, daemon=True)
    w.start()
    stats = run(cfg(model, inp, out, "engine.min_replicas=1", "engine.max_replicas=2"))
    stop.set()
    timeline.append([round(time.time() - t0, 1), "job done"])
    print("RESULT " + json.dumps({"stats": stats, "timeline": timeline, "sizes": sizes}))
"""


def _input(tmp_path, n: int) -> str:
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(json.dumps({"prompt": f"Write a {2000 + 250 * k}-word report on "
                                                   f"city number {k}."}) for k in range(n)))
    return str(inp)


def _result(r: subprocess.CompletedProcess) -> dict:
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, (r.stdout + r.stderr)[-6000:]
    return json.loads(line[0][7:])


def _exactly_once(out, n: int) -> list[dict]:
    gens = storage.read_dataset(str(out / "generations")).to_pylist()
    rej = storage.read_dataset(str(out / "_rejects"))
    ids = [g["id"] for g in gens] + (rej.column("id").to_pylist() if rej is not None else [])
    assert len(ids) == len(set(ids)) == n, (len(ids), len(set(ids)), n)
    return gens


def test_node_lost_mid_run_every_id_once_and_no_step_regenerated(tiny_model, tmp_path):
    n = 16
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", NODE_LOSS, tiny_model, _input(tmp_path, n),
                        str(out)], capture_output=True, text=True, timeout=900)
    res = _result(r)
    print("node-loss:", res["timeline"], {k: res["stats"].get(k) for k in (
        "written_this_run", "resumed_steps", "generated_steps", "rejects_by_reason")},
        res["journaled_at_kill"], len(res["rewritten"]))
    assert res["alive_when_killed"], "the job ended before the node was removed"
    gens = _exactly_once(out, n)
    stats = res["stats"]
    assert stats["rows_in_output"] == len(gens) >= n - 2
    assert res["journaled_at_kill"] >= 12 and res["rewritten"] == []  # no step generated twice
    assert stats["resumed_steps"] > 0  # rows lost with the node went on from their journal
    # The removed node held one of the two replicas (which replica finishes which rows after
    # that is the scheduler's business: on a slow machine the survivor may finish them all).
    assert len(res["replica_nodes_at_kill"]) == 2
    assert res["killed_node"] in res["replica_nodes_at_kill"]


AUTOSCALER_YAML = """cluster_name: fake-gpu
max_workers: 2
upscaling_speed: 2.0
idle_timeout_minutes: 5
provider:
  type: fake_multinode
  gcs_address: 127.0.0.1:{port}
  disable_launch_config_check: true
  disable_node_updaters: true
head_node_type: ray.head.default
# `ray up` fills these in; `ray start --autoscaling-config` needs them written out.
auth: {{}}
file_mounts: {{}}
cluster_synced_files: []
initialization_commands: []
setup_commands: []
head_setup_commands: []
worker_setup_commands: []
head_start_ray_commands: []
worker_start_ray_commands: []
available_node_types:
  ray.head.default:
    resources: {{CPU: 2, GPU: 0}}
    node_config: {{}}
    max_workers: 0
  gpu_worker:
    resources: {{CPU: 1, GPU: 1}}
    node_config: {{}}
    min_workers: 0
    max_workers: 2
"""


def test_autoscaler_adds_gpu_nodes_and_the_pool_grows(tiny_model, tmp_path):
    port, tmp = free_port(), f"/tmp/fk{tmp_path.name[-6:]}"
    conf = tmp_path / "autoscaler.yaml"
    conf.write_text(AUTOSCALER_YAML.format(port=port))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_agent_register_timeout_ms": "180000", "PATH": f"{BIN}:{os.environ['PATH']}"}
    start = subprocess.run([f"{BIN}/ray", "start", "--head", f"--port={port}", "--num-cpus=2",
                            "--num-gpus=0", f"--temp-dir={tmp}", "--node-ip-address=127.0.0.1",
                            f"--autoscaling-config={conf}", "--include-dashboard=false",
                            f"--dashboard-agent-listen-port={free_port()}",
                            "--disable-usage-stats"], env=env, capture_output=True, text=True,
                           timeout=180)
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        n, out = 48, tmp_path / "out"  # enough work that one replica is still busy when a second is up
        r = subprocess.run([sys.executable, "-c", AUTOSCALE, tiny_model, _input(tmp_path, n),
                            str(out)], capture_output=True, text=True, timeout=900,
                           env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"})
        res = _result(r)
        print("autoscaling timeline:", res["timeline"])
        assert res["sizes"][0][1] == 0  # no engine before the autoscaler brought a GPU node
        # The pool asked for a second replica and the autoscaler added a node for it (on a quiet
        # machine the first replica may finish every row before the second is up).
        assert max(s[1] for s in res["sizes"]) >= 2 and max(s[0] for s in res["sizes"]) >= 3
        _exactly_once(out, n)
    finally:
        subprocess.run(["pkill", "-9", "-f", tmp], check=False)
        subprocess.run(["pkill", "-9", "-f", f"gcs-address=127.0.0.1:{port}"], check=False)
        time.sleep(1)
