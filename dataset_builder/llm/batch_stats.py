"""How full a vLLM engine's batch was: a custom vLLM stat logger (EngineConfig.batch_stats).

Why: "keeps GPUs busy" is a claim about the engine's batch, not about rows in flight. A row
between two AgentWrite steps (its result on the way back, the next prompt on the way in) holds
no batch slot, and a KV cache too small for the sequences in flight shows up as waiting
requests beside a batch that is not full. Neither is visible from the job's side.

vLLM calls `record` after every engine step with the scheduler's counts (running and waiting
requests, KV-cache usage) and the step's finished and preempted requests. Over the time the
engine has work (a request running or waiting) we add up:
  busy_s        seconds with work
  seq_s         sequence-seconds in the batch (running after the step + finished in it)
  queued_s      seconds with a request waiting (batch full, KV cache full, or the step's
                prefill token budget spent)
  kv_s          KV-cache usage (0..1) times seconds
  preemptions   requests evicted from the batch to make KV room
so seq_s / (busy_s * max_num_seqs) is the mean batch fill. Counters only grow: callers
difference two `snapshot()`s to measure one run.
"""
from __future__ import annotations

import time

FIELDS = ("busy_s", "seq_s", "queued_s", "kv_s", "steps", "preemptions")


class BatchStats:
    """The counters (no vLLM import: the driver reads them too). `vllm_logger` makes the
    engine-side object."""

    def __init__(self, max_num_seqs: int):
        self.max_num_seqs = max_num_seqs
        self.c = dict.fromkeys(FIELDS, 0.0)
        self._last: float | None = None  # time of the last step that left work behind

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
        if scheduler_stats is None:
            return
        now, s, c = time.monotonic(), scheduler_stats, self.c
        finished = len(iteration_stats.finished_requests) if iteration_stats else 0
        if self._last is not None:  # an idle gap (no work) before this step is not counted
            dt = now - self._last
            c["busy_s"] += dt
            c["seq_s"] += (s.num_running_reqs + finished) * dt
            c["queued_s"] += dt if s.num_waiting_reqs + s.num_skipped_waiting_reqs else 0.0
            c["kv_s"] += s.kv_cache_usage * dt
        c["steps"] += 1
        c["preemptions"] += iteration_stats.num_preempted_reqs if iteration_stats else 0
        work = s.num_running_reqs + s.num_waiting_reqs + s.num_skipped_waiting_reqs
        self._last = now if work else None

    def log_engine_initialized(self):  # vLLM's hook; nothing to say
        pass

    def snapshot(self) -> dict:
        return {**self.c, "max_num_seqs": self.max_num_seqs}


def vllm_logger(max_num_seqs: int) -> BatchStats:
    """BatchStats as a vLLM stat logger (vLLM checks the base class); pass
    `lambda vllm_config, engine_index: it` in AsyncLLM's `stat_loggers`."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class Logger(BatchStats, StatLoggerBase):
        pass
    return Logger(max_num_seqs)


def fill(before: dict, after: dict) -> dict:
    """The batch figures of what ran between two snapshots."""
    d = {k: after[k] - before.get(k, 0.0) for k in FIELDS}
    busy = max(d["busy_s"], 1e-9)
    return {"busy_s": round(d["busy_s"], 1), "steps": int(d["steps"]),
            "batch_fill": d["seq_s"] / (busy * after["max_num_seqs"]),
            "queued_share": d["queued_s"] / busy, "kv_usage_mean": d["kv_s"] / busy,
            "preemptions": int(d["preemptions"])}
