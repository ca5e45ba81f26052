"""Progress of a long job on its console: counts gathered from the workers while the job runs.

    with progress.Console("generate", cfg.progress, cfg.progress_interval_s, line) as con:
        ds = engine_stage(..., progress_board=con.board)   # workers: progress.add(rows_ok=1)
        ...                                                 # a line every interval_s:
    # [generate 0:05:30] instructions 12/40 done, 1 rejected | ... | ETA 0:04:10

Why it is built like this: the jobs start Ray with log_to_driver=False (Ray Data's progress
bars are noise in a job log), so nothing a worker prints reaches the console, and a job ends in
one write_datasink or take_all, so the driver sees no row until the end. So the workers count
(`add(**counts)`, `gauge(**values)`) into their process's Meter, which sends the sums to the
job's Board actor at most once per FLUSH_S from a daemon thread: never one call per row or
request (at the scale rehearsal's rates that would be thousands of calls a second). The driver
reads the board every `interval_s` and prints one line to stdout, which `ray job logs -f`
shows. The board's counts are for watching: a worker killed before its last flush loses up to
FLUSH_S of counts, so a job's final summary comes from its own results (`Console.final`).
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable

from dataset_builder.core.config import ConfigError

FLUSH_S = 1.0   # a worker process sends its counts at most this often

# line(counts, gauges, active_s) -> the line's text; active_s: seconds since the board's first
# count arrived (engine start-up is not part of any rate)
LineFn = Callable[[dict, dict, float], str]


class Board:
    """The job's counters (summed) and gauges (latest value); a Ray actor."""

    def __init__(self):
        self.counts: dict[str, float] = {}
        self.gauges: dict[str, float] = {}
        self.first: float | None = None

    def add(self, counts: dict, gauges: dict) -> None:
        if self.first is None:
            self.first = time.time()
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.gauges.update(gauges)

    def snapshot(self) -> tuple[dict, dict, float | None]:
        return self.counts, self.gauges, self.first


class Meter:
    """One process's counts on their way to a board: summed here, sent by a daemon thread at
    most once per `flush_s`, and by `flush()`."""

    def __init__(self, board, flush_s: float = FLUSH_S):
        self.board, self.flush_s = board, flush_s
        self.counts: dict[str, float] = {}
        self.gauges: dict[str, float] = {}
        self.lock = threading.Lock()
        self.sent = 0     # remote calls made (tests check the batching)
        self._stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True, name="progress-meter").start()

    def add(self, counts: dict, gauges: dict) -> None:
        with self.lock:
            for k, v in counts.items():
                self.counts[k] = self.counts.get(k, 0) + v
            self.gauges.update(gauges)

    def flush(self, wait: bool = False):
        """Send what is pending; `wait`: until the board has it."""
        with self.lock:
            if not (self.counts or self.gauges):
                return None
            counts, gauges, self.counts, self.gauges = self.counts, self.gauges, {}, {}
        self.sent += 1
        return _call(self.board, "add", counts, gauges, wait=wait)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 -- the job's board is gone (job over): stop
                return

    def close(self) -> None:
        """Stop the timer and send what is pending, waiting (up to 10 s) until the board has
        it: a process about to exit (an engine replica the pool lets go) loses nothing."""
        self._stop.set()
        try:
            self.flush(wait=True)
        except Exception:  # noqa: BLE001 -- the board is gone: these counts were for watching
            pass


def _remote(board) -> bool:
    """A Ray actor's handle; else a local Board (a job run without Ray: training with
    num_workers=0)."""
    return hasattr(board.add, "remote")


def _call(board, method: str, *args, wait: bool = False):
    """A method of a board; on an actor, `wait` returns its result (else its ObjectRef)."""
    if not _remote(board):
        return getattr(board, method)(*args)
    ref = getattr(board, method).remote(*args)
    if wait:
        import ray
        return ray.get(ref, timeout=30)
    return ref


_meter: Meter | None = None
_meter_lock = threading.Lock()


def attach(board) -> None:
    """Send this process's counts to `board` (None: count nothing). Engine replicas, sink tasks
    and training workers call it with the board their job passed them; a process reused by a
    later job switches to that job's board."""
    global _meter
    with _meter_lock:
        if _meter is not None and _meter.board == board:
            return
        if _meter is not None:
            _meter.close()
        _meter = Meter(board) if board is not None else None


def add(**counts: float) -> None:
    """Add to the job's counters (no-op in a process attached to no board)."""
    m = _meter
    if m is not None:
        m.add(counts, {})


def gauge(**values: float) -> None:
    """Set the job's gauges (latest value wins: loss, total steps)."""
    m = _meter
    if m is not None:
        m.add({}, values)


def flush() -> None:
    m = _meter
    if m is not None:
        m.flush()


def duration(s: float | None) -> str:
    if s is None or s != s or s == float("inf"):
        return "-"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def eta(left: float, done: float, active_s: float) -> str:
    """Time left at the rate so far (done units over the active seconds); '-' until any unit
    is done."""
    if done <= 0 or active_s <= 0:
        return "-"
    return duration(max(left, 0) * active_s / done)


def check_interval(interval_s: float, key: str = "progress_interval_s") -> None:
    if not interval_s > 0:
        raise ConfigError(f"{key} must be > 0 seconds, got {interval_s}")


class Console:
    """The driver's side: the board, and a thread that prints `line(...)` every `interval_s`
    (off: no board, no thread, `board` None, so the workers count nothing)."""

    def __init__(self, job: str, enabled: bool, interval_s: float, line: LineFn, out=None,
                 board=None):
        """`board`: a board to use instead of a new one (tests: a local `Board()`)."""
        check_interval(interval_s)
        self.job, self.enabled, self.interval_s, self.line = job, enabled, interval_s, line
        self.out = out or sys.stdout
        self.board = board
        self.t0 = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Console:
        if self.enabled:
            import ray
            if self.board is None:
                self.board = ray.remote(num_cpus=0)(Board).remote() if ray.is_initialized() \
                    else Board()
            attach(self.board)  # counts made on the driver (local training) too
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name="progress-console")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        attach(None)
        if self.board is not None and _remote(self.board):
            import ray
            ray.kill(self.board)   # one idle process less (a pipeline runs several jobs)

    def snapshot(self) -> tuple[dict, dict, float]:
        counts, gauges, first = _call(self.board, "snapshot", wait=True)
        return counts, gauges, (time.time() - first) if first else 0.0

    def print(self, text: str) -> None:
        print(f"[{self.job} {duration(time.time() - self.t0)}] {text}", file=self.out,
              flush=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.print(self.line(*self.snapshot()))
            except Exception as e:  # noqa: BLE001 -- watching must never stop the job
                self.print(f"(progress unavailable: {type(e).__name__})")

    def final(self, text: str) -> None:
        """The last line: `text` made from the job's own exact counts (the board's may lag)."""
        if self.enabled:
            self.print("done: " + text)
