"""Batch-fill counters (llm/batch_stats.py) driven by scripted engine steps; the real engine's
figures are checked in tests/integration/test_engine.py."""
from types import SimpleNamespace as NS

import pytest

from dataset_builder.llm import batch_stats
from dataset_builder.llm.batch_stats import BatchStats, fill


def _steps(monkeypatch, script):
    """script: (time, running, waiting, finished, preempted, kv usage) per engine step."""
    b = BatchStats(max_num_seqs=4)
    for t, run, wait, fin, pre, kv in script:
        monkeypatch.setattr(batch_stats.time, "monotonic", lambda t=t: t)
        it = NS(finished_requests=[0] * fin, num_preempted_reqs=pre)
        b.record(NS(num_running_reqs=run, num_waiting_reqs=wait, num_skipped_waiting_reqs=0,
                    kv_cache_usage=kv), it)
    return b


def test_fill_counts_running_and_finished_over_busy_time_only(monkeypatch):
    b = _steps(monkeypatch, [
        (0.0, 4, 2, 0, 0, 0.5),   # first step: nothing before it to count
        (1.0, 4, 0, 0, 0, 0.5),   # 1 s: 4 of 4, a request was waiting before this step
        (2.0, 0, 0, 2, 1, 0.0),   # 1 s: 2 ran and finished, then no work
        (9.0, 1, 0, 0, 0, 0.25),  # after 7 idle seconds: not counted
        (10.0, 1, 0, 0, 0, 0.25),  # 1 s: 1 of 4
    ])
    f = fill({}, b.snapshot())
    assert f["busy_s"] == 3.0 and f["steps"] == 5 and f["preemptions"] == 1
    assert f["batch_fill"] == pytest.approx((4 + 2 + 1) / (3 * 4))
    assert f["queued_share"] == pytest.approx(0.0)  # waiting only at the first step
    assert f["kv_usage_mean"] == pytest.approx((0.5 + 0.0 + 0.25) / 3)


def test_fill_between_two_snapshots_is_that_run_alone(monkeypatch):
    b = _steps(monkeypatch, [(0.0, 4, 0, 0, 0, 0.1), (1.0, 4, 3, 0, 0, 0.1)])
    before = b.snapshot()
    monkeypatch.setattr(batch_stats.time, "monotonic", lambda: 3.0)
    b.record(NS(num_running_reqs=1, num_waiting_reqs=0, num_skipped_waiting_reqs=0,
                kv_cache_usage=0.1), None)  # no outputs: no iteration stats
    f = fill(before, b.snapshot())
    assert f["busy_s"] == 2.0 and f["batch_fill"] == pytest.approx(1 / 4)
    assert f["queued_share"] == 0.0 and f["steps"] == 1
