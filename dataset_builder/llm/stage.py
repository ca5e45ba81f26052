"""The engine stage: rows through LLM engine replicas on an autoscaling Ray Data actor pool.

    ds = engine_stage(ds, engine_cfg, AgentWriteTask, {...})   # one map_batches call

Each pool actor holds one engine (vLLM AsyncLLM, an OpenAI-compatible client, or a handle to a
running EngineActor) and runs `engine.in_flight` rows at once: one row is one call of the
task's coroutine (a whole AgentWrite instruction, one judge request, ...). Rows travel in tasks
of `rows_per_task` (DESIGN.md §4): Ray Data's scheduler spends a few ms of driver time per task,
which one-row tasks pay per row. A large input gets larger tasks (`task_rows`): all of a
stage's tasks wait in its queue at once, each costing the driver a few KB, so their number is
capped (`max_queued_tasks`). A replica takes twice the tasks its `in_flight` rows fill and runs
their rows under one semaphore of `in_flight`, so a row starts whenever one ends; a task's rows
leave together when its last one is done. Resources are declared here, on the stage; Ray Data
grows the pool from `min_replicas` to `max_replicas` while rows queue, and the autoscaler adds
nodes for it.

Rows are `{"id", "status", "payload"}` with `payload` a JSON string, so the stage never infers
an Arrow schema from a nested record. Rows whose status is not "todo" (a reject from an earlier
stage) pass through untouched. An exception in one row becomes that row's reject; only an engine
that died kills its actor, so Ray restarts it and reruns its rows (the task's journal bounds
the attempts).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import uuid

import pyarrow as pa

from dataset_builder.core import progress, ray_private
from dataset_builder.core.logs import library_logging
from dataset_builder.core.records import ROW, StageRow
from dataset_builder.llm import make_engine
from dataset_builder.llm.base import Engine, EngineConfig, EngineError, EngineTask

log = logging.getLogger(__name__)


def _engine_dead(e: BaseException) -> bool:
    """vLLM's engine core died (OOM, a crashed kernel): every later request fails too."""
    return type(e).__name__ in ("EngineDeadError", "EngineGenerateError") or \
        "engine core" in str(e).lower() and "dead" in str(e).lower()


class EngineStage:
    """Ray Data callable class: one engine (llm.base.Engine) and one `task_cls(**task_kwargs)`
    (llm.base.EngineTask) per replica; rows in and out are core.records.ROW."""

    def __init__(self, engine_cfg: EngineConfig, task_cls: type[EngineTask], task_kwargs: dict,
                 up_key: str = "", progress_board=None):
        import ray

        # The replica's rows in flight, across all its tasks: a task's finished rows wait for
        # its last one without holding a slot, so the engine always has in_flight rows.
        self._slots = asyncio.Semaphore(engine_cfg.in_flight)

        library_logging()  # this replica's lines in its Ray worker log
        self.engine: Engine = make_engine(engine_cfg)
        progress.attach(progress_board)
        if progress_board is not None:
            self.engine = _Counted(self.engine, task_cls.stage)
        self.task: EngineTask = task_cls(**task_kwargs)
        if up_key:  # tells engines_up's watcher on the driver that a replica is up
            ray_private.kv_put(up_key, b"1")
        ctx = ray.get_runtime_context()
        self.where = json.dumps({"node_id": ctx.get_node_id(), "pid": os.getpid()})
        log.info("engine replica up: %s on %s", engine_cfg.attach or engine_cfg.model, self.where)

    async def _one(self, row: StageRow) -> StageRow:
        if row["status"] not in self.task.accepts:
            return row
        item = json.loads(row["payload"])
        try:
            async with self._slots:
                out = await self.task.run(self.engine, item)
        except Exception as e:  # one bad row is one reject, never the job
            if _engine_dead(e):
                log.error("engine died (%s): exiting so Ray restarts this replica", e)
                os._exit(1)
            log.warning("row %s failed in %s: %s: %s", row["id"], self.task.stage,
                        type(e).__name__, e)
            out = {"status": "reject", "stage": self.task.stage,
                   "reason": f"internal_error: {type(e).__name__}: {str(e)[:300]}"}
        progress.add(**{f"{self.task.stage}_{out['status']}": 1})
        key = self.task.engine_key
        out[key] = self.where
        if self.engine.batch is not None:  # EngineConfig.batch_stats: the replica's counters
            out[f"{key}_batch"] = self.engine.batch.snapshot()  # so far; the driver keeps the last
        return {"id": row["id"], "status": out["status"],
                "payload": json.dumps({**item, **out}, ensure_ascii=False, default=str)}

    def __del__(self):
        # Ray Data lets a replica go gracefully (UDF.__del__) when its pool shrinks or the
        # stage ends: the counts it still holds go to the job's board first.
        progress.attach(None)

    async def __call__(self, batch):
        out = await asyncio.gather(*(self._one(r) for r in batch.to_pylist()))
        return pa.Table.from_pylist(out, schema=ROW)


def task_rows(engine_cfg: EngineConfig, n_rows: int | None) -> int:
    """Rows per engine-stage task: `rows_per_task`, or more where `n_rows` would otherwise make
    over `max_queued_tasks` tasks. Why a cap on the count: Ray Data queues every block the
    stage's input makes and bounds that queue by bytes, and these blocks are a few KB, so all
    of them wait at once, each costing the driver ~5 KB (its ref and metadata) plus, under
    100 KB, the block itself (in the owner's heap): 1M rows in 8-row tasks grew the driver by
    ~1 GB (DESIGN §13)."""
    rows = engine_cfg.rows_per_task  # >= 1: EngineConfig checks it
    if n_rows and engine_cfg.max_queued_tasks:
        rows = max(rows, -(-n_rows // engine_cfg.max_queued_tasks))
    return rows


def engine_stage(ds, engine_cfg: EngineConfig, task_cls: type[EngineTask], task_kwargs: dict,
                 up_key: str = "", progress_board=None, n_rows: int | None = None):
    """`ds` (rows id/status/payload) through the engine pool, `task_rows` rows per task;
    a replica takes twice as many tasks as fill its `in_flight` rows, so a new task's rows are
    waiting when a row ends. `engine_cfg.min_replicas..max_replicas` bound the pool. `up_key`: what
    `engines_up` yielded, so that its watcher hears when the first replica is up.
    `progress_board` (core.progress.Console.board): each replica counts `<stage>_<status>` of
    its rows, `<stage>_requests` and `<stage>_output_tokens` there, and so can its task.
    `n_rows`: the rows `ds` holds, where the caller knows (caps the number of tasks)."""
    from ray.data import ActorPoolStrategy
    lo, hi = engine_cfg.min_replicas, max(engine_cfg.min_replicas, engine_cfg.max_replicas)
    rows = task_rows(engine_cfg, n_rows)
    if rows > engine_cfg.rows_per_task:
        log.info("engine stage: %d rows in tasks of %d rows (at most engine.max_queued_tasks=%d)",
                 n_rows, rows, engine_cfg.max_queued_tasks)
    tasks = engine_cfg.in_flight if rows == 1 else 2 * -(-engine_cfg.in_flight // rows)
    return ds.repartition(target_num_rows_per_block=rows).map_batches(
        EngineStage, batch_size=rows, batch_format="pyarrow",
        fn_constructor_kwargs={"engine_cfg": engine_cfg, "task_cls": task_cls,
                               "task_kwargs": task_kwargs, "up_key": up_key,
                               "progress_board": progress_board},
        compute=ActorPoolStrategy(min_size=lo, max_size=hi,
                                  max_concurrent_calls_per_actor=tasks),
        num_cpus=0 if engine_cfg.attach else engine_cfg.num_cpus,
        num_gpus=0 if engine_cfg.attach else engine_cfg.num_gpus)


class _Counted:
    """A replica's engine that counts its requests and output tokens for the job's progress
    (the Meter batches them: no remote call per request)."""

    def __init__(self, engine: Engine, stage: str):
        self._engine = engine
        self._keys = f"{stage}_requests", f"{stage}_output_tokens"

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    async def chat(self, messages: list[dict], sampling):
        c = await self._engine.chat(messages, sampling)
        progress.add(**dict(zip(self._keys, (1, c.output_tokens))))
        return c


@contextlib.contextmanager
def engines_up(*engine_cfgs):
    """Around the whole dataset with engine stages, from before it is created (a dataset
    keeps the DataContext it was created under): Ray Data waits for each pool's first
    `min_replicas` (by default forever, silently); here a line says what it waits for, and a
    cluster with no room for one engine, or an engine that cannot load its model, ends the
    job with one line after `start_timeout_s`. Yields the key to pass to `engine_stage`:

        with engines_up(cfg.engine) as up_key:
            ds = engine_stage(ds, cfg.engine, Task, {...}, up_key=up_key)
    """
    import ray
    from ray.data import DataContext
    cfgs = [c for c in engine_cfgs if c is not None]
    timeout = max(c.start_timeout_s for c in cfgs)
    ctx = DataContext.get_current()
    old, ctx.wait_for_min_actors_s = ctx.wait_for_min_actors_s, timeout
    need = [{"CPU": c.num_cpus, "GPU": c.num_gpus} for c in cfgs if not c.attach]
    for c in cfgs:
        log.info("engine stage: %d..%d replicas of %s, each %s", c.min_replicas, c.max_replicas,
                 c.attach or c.model, "attached" if c.attach else
                 {"CPU": c.num_cpus, "GPU": c.num_gpus})
    key = f"longwriter-engine-up-{uuid.uuid4().hex}"
    stop = _watch_start(key, need, timeout)
    try:
        yield key
    except ray.exceptions.GetTimeoutError:
        raise EngineError(
            f"no engine replica was up after {timeout}s: each needs {' or '.join(map(str, need))}"
            f", the cluster has {ray.cluster_resources()} (free: {ray.available_resources()}); "
            "an autoscaling cluster needs a node type that fits (cluster.yaml)") from None
    except ray.exceptions.RayActorError as e:
        cause = str(e).splitlines()
        # the raised error's own line ("...EngineError: why"), not a source line quoting it
        why = next((x for x in reversed(cause) if re.match(r"\s*([\w.]+\.)?EngineError: ", x)),
                   cause[0] if cause else repr(e))
        raise EngineError(f"an engine replica could not start: {why.strip()[:500]}") from None
    finally:
        stop.set()
        ctx.wait_for_min_actors_s = old


def _watch_start(key: str, need: list[dict], timeout: float):
    """A daemon thread that says, every minute (sooner for a short timeout) while no replica
    has marked `key`, what the job waits for: a pool waiting on an autoscaler, or on a cluster
    with no room, is otherwise silent. Returns the Event that stops it."""
    import threading
    import time

    import ray
    stop, t0, every = threading.Event(), time.monotonic(), min(60.0, max(timeout / 2, 1.0))

    def watch():
        try:
            while need and not stop.wait(every):
                if ray_private.kv_get(key):
                    break
                log.warning("waiting for an engine replica (%.0fs of %ss): each needs %s; "
                            "free in the cluster: %s", time.monotonic() - t0, timeout,
                            " or ".join(map(str, need)), ray.available_resources())
            stop.wait()
            ray_private.kv_del(key)
        except Exception:  # noqa: BLE001 -- Ray shut down under the watcher: nothing to say
            pass

    threading.Thread(target=watch, daemon=True, name="engine-start-watch").start()
    return stop
