"""`ray job submit` against a local head with token authentication; records land in moto S3.

A second Ray cluster (its own ports and temp dir) is started for this module and stopped by
killing only its own processes, so the session's shared Ray is untouched.
"""
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time

import pytest

from dataset_builder.core import storage
from dataset_builder.llm.server import free_port

pytestmark = pytest.mark.e2e
BIN = os.path.dirname(sys.executable)


def _run(args, env, timeout=120):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def ray_head(moto_s3):
    token = secrets.token_hex(32)
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    port, dash = free_port(), free_port()
    # PATH: `python` in a job entrypoint must be this venv's, as on a cluster whose image has
    # the project installed.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    r = _run([f"{BIN}/ray", "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
              f"--dashboard-port={dash}", "--num-cpus=3", f"--temp-dir={tmp}",
              # the agent's default port (52365) is fixed: any other Ray on the machine took it
              # and this head's job agent never came up ("No available agent to submit job")
              f"--dashboard-agent-listen-port={free_port()}",
              "--node-ip-address=127.0.0.1",
              "--include-dashboard=true", "--disable-usage-stats"], env)
    assert r.returncode == 0, r.stderr[-2000:]
    address = f"http://127.0.0.1:{dash}"
    for _ in range(60):  # the job agent comes up a few seconds after `ray start` returns
        if _run([f"{BIN}/ray", "job", "list", "--address", address], env).returncode == 0:
            break
        time.sleep(2)
    yield address, env, token
    subprocess.run(["pkill", "-9", "-f", tmp], check=False)
    subprocess.run(["pkill", "-9", "-f", f"--gcs-address=127.0.0.1:{port}"], check=False)


def _submit(address, env, *job_args, wait=True):
    args = [f"{BIN}/ray", "job", "submit", "--address", address, "--working-dir", "."]
    if not wait:
        args.append("--no-wait")
    for _ in range(12):
        r = _run(args + ["--", *job_args], env, timeout=600)
        # The head's job agent registers after `ray job list` already answers; on a loaded
        # 2-core machine it was not there yet for ~30 s (HTTP 500 "No available agent").
        if "No available agent to submit job" not in r.stdout + r.stderr:
            return r
        time.sleep(5)
    return r


def test_submit_without_or_with_wrong_token_is_rejected(ray_head, tmp_path):
    address, env, _ = ray_head
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    no_token["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    for bad in (no_token, {**env, "RAY_AUTH_TOKEN": "0" * 64}):
        r = _submit(address, bad, "python", "-c", "print('should not run')")
        assert r.returncode != 0
        assert "should not run" not in r.stdout
        assert any(w in (r.stdout + r.stderr).lower() for w in ("auth", "401", "unauthorized",
                                                                 "token"))


def test_generate_job_writes_records_to_s3(ray_head, tiny_model, moto_s3, tmp_path):
    address, env, token = ray_head
    run = f"s3://test-bucket/e2e-{tmp_path.name}"
    lines = [json.dumps({"prompt": p}, ensure_ascii=False).encode() for p in [
        "Write a 3000-word essay on rivers.", "请写一篇3000字的文章，介绍长城。"]]
    storage.write_bytes_atomic(f"{run}/in.jsonl", b"\n".join([*lines, b"{bad json"]))
    t0 = time.time()
    r = _submit(address, env, "python", "-m", "ray_jobs.generate", "--config",
                "ray_jobs/configs/generate_tiny.yaml", "--set", f"engine.model={tiny_model}",
                "--set", f"input={run}/in.jsonl", "--set", f"output={run}/out",
                "--set", "progress_interval_s=0.2", "--set", "engine.batch_stats=true")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "succeeded" in (r.stdout + r.stderr).lower(), r.stdout[-2000:]
    # progress lines reach `ray job logs` while the job runs, then the exact last one
    out = r.stdout.splitlines()
    summary = next(i for i, x in enumerate(out) if x.startswith("summary: "))
    live = [x for x in out[:summary] if x.startswith("[generate ") and "done:" not in x]
    assert live and all("instructions " in x and "/2 done" in x for x in live), out
    assert any(x.startswith("[generate ") and "done: instructions 2/2 written | rejected: input 1"
               in x for x in out[:summary]), out
    gens = storage.read_dataset(f"{run}/out/generations").to_pylist()
    assert len(gens) == 2 and all(g["response"] for g in gens) and time.time() - t0 > 0
    rejects = storage.read_dataset(f"{run}/out/_rejects").to_pylist()
    assert [(r["line"], r["reason"].split(":")[0]) for r in rejects] == [(3, "malformed_json")]
    # secrets never land in outputs
    cfg_text = storage.read_bytes(f"{run}/out/_config.yaml").decode()
    stats_text = storage.read_bytes(f"{run}/out/_stats.json").decode()
    # the job's one replica ran the 2 rows (of 32 sequences): its batch was never over 2/32
    [e] = json.loads(stats_text)["engines"]
    assert e["rows"] == 2 and e["steps"] > 10 and 0 < e["batch_fill"] <= 2 / 32 + 1e-9
    for secret in (token, os.environ["AWS_SECRET_ACCESS_KEY"] * 2):
        assert secret not in cfg_text + stats_text


def test_bad_config_fails_with_one_clear_line(ray_head):
    address, env, _ = ray_head
    r = _submit(address, env, "python", "-m", "ray_jobs.generate", "--config",
                "ray_jobs/configs/generate_tiny.yaml", "--set", "engine.max_num_seqs=many",
                "--set", "input=x", "--set", "output=y")
    assert r.returncode != 0
    assert "error: engine.max_num_seqs: expected int, got str" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout


def test_sft_job_submits_as_a_module_and_trains_on_s3(ray_head, tiny_narrow_model, moto_s3,
                                                      tmp_path):
    """`python -m ray_jobs.sft` under `ray job submit --working-dir .`: 2 Ray Train workers,
    data, checkpoints and the model on S3, no secret in any output."""
    address, env, token = ray_head
    run = f"s3://test-bucket/e2e-sft-{tmp_path.name}"
    rows = [{"messages": [{"role": "user", "content": f"Name {i}."},
                          {"role": "assistant", "content": f"Number {i} is {i}."}]}
            for i in range(6)]
    storage.write_jsonl(f"{run}/data.jsonl", rows)
    r = _submit(address, env, "python", "-m", "ray_jobs.sft", "--config",
                "ray_jobs/configs/sft_tiny.yaml", "--set", f"model={tiny_narrow_model}",
                "--set", f"data={run}/data.jsonl", "--set", f"output={run}/out",
                "--set", "max_steps=4", "--set", "progress_interval_s=0.2")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    # rank 0's steps reach the driver's progress lines (a worker's prints would not)
    assert any(x.startswith("[sft ") and "step " in x for x in r.stdout.splitlines()), r.stdout
    assert f"model: {run}/out/model" in r.stdout
    manifest = storage.load_manifest(f"{run}/out/model")
    assert manifest["final_metrics"]["steps"] == 4 and manifest["data"]["rows_kept"] == 6
    assert storage.exists(f"{run}/out/train/checkpoint_manager_snapshot.json")
    texts = [storage.read_bytes(f"{run}/out/{p}").decode() for p in
             ("_config.yaml", "model/_manifest.json", "report.md", "metrics.jsonl")]
    for secret in (token, os.environ["AWS_SECRET_ACCESS_KEY"] * 2):
        assert not any(secret in t for t in texts)
