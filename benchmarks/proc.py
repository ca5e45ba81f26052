"""A job as its user runs it, watched: `python -m ray_jobs.<job>` in its own process (with its
own local Ray), its process tree sampled with psutil every 0.5 s. Shared by the benchmarks that
time whole jobs (progress_cost.py, scale.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("driver", "engine", "other")


def kind(p: psutil.Process, root: int) -> str:
    """driver (the job's process), engine (an engine-stage replica and the vLLM processes
    under it), other (Ray's own processes and its task workers, which run Ray Data's reads,
    maps and sink writes in turn, so they are not told apart)."""
    if p.pid == root:
        return "driver"
    try:
        title = " ".join(p.cmdline())
        chain = [title] + [" ".join(a.cmdline()) for a in p.parents()]
    except psutil.Error:
        return "other"
    if any("EngineStage" in t or t.startswith("VLLM") for t in chain[:3]):
        return "engine"
    return "other"


def _kill_tree(proc: subprocess.Popen) -> None:
    """The job and every process under it (its local Ray) at once: a lost node."""
    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.Error:
        procs = []
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    proc.wait()


def _rss(pid: int) -> dict:
    """Resident memory: all, private (anonymous: the process's own heap), and shared memory
    (Ray's object store pages the process has read: counted in its RSS, but owned by the
    store). From /proc, as psutil's memory_full_info reads all of smaps (slow)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssShmem"):
                out[{"VmRSS": "rss", "RssAnon": "anon", "RssShmem": "shmem"}[key]] = \
                    int(val.split()[0]) * 1024
    return out


def run_job(module: str, config: str, sets: list[str], log: str | Path, env: dict | None = None,
            kill_when=None) -> dict:
    """Wall seconds, CPU seconds (user + system) by process kind, the driver's peak RSS.
    `kill_when()` is polled with each sample; when true the whole tree is killed (`killed`)."""
    args = [sys.executable, "-m", f"ray_jobs.{module}", "--config", config,
            *[x for s in sets for x in ("--set", s)]]
    t0, peak, killed = time.time(), dict.fromkeys(("rss", "anon", "shmem"), 0), False
    seen: dict[int, tuple[str, float]] = {}
    with open(log, "w") as sink:  # a file, not a pipe: a full pipe would stall the job
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, **(env or {})})
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                for k, v in _rss(proc.pid).items():
                    peak[k] = max(peak[k], v)
                tree = [root, *root.children(recursive=True)]
            except (psutil.Error, OSError):
                tree = []
            for p in tree:
                try:
                    t = p.cpu_times()
                    # a pooled worker becomes an engine replica after its first sample
                    k = seen[p.pid][0] if seen.get(p.pid, ("other",))[0] != "other" \
                        else kind(p, proc.pid)
                    seen[p.pid] = (k, t.user + t.system)
                except psutil.Error:
                    pass
            if kill_when is not None and kill_when():
                _kill_tree(proc)
                killed = True
                break
            time.sleep(0.5)
    if proc.returncode and not killed:
        raise SystemExit(f"{module} failed ({proc.returncode}); see {log}:\n"
                         + Path(log).read_text()[-3000:])
    cpu = dict.fromkeys(KINDS, 0.0)
    for k, s in seen.values():
        cpu[k] += s
    return {"wall_s": round(time.time() - t0, 1),
            **{f"driver_peak_{k}_mb": round(v / 2**20) for k, v in peak.items()},
            "killed": killed, **{f"cpu_{k}_s": round(v, 2) for k, v in cpu.items()}}
