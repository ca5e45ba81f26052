"""Whole-instruction scheduling over N engine actors, with refill and at-least-once delivery.

Each engine actor keeps up to `in_flight` instruction coroutines running; as soon as one
finishes, the next instruction is sent to the least-loaded actor, so no engine ever waits for a
batch to drain. If an actor dies (node lost, OOM, killed), Ray restarts it and every
instruction it held goes back to the queue; the step journal makes the retry resume
mid-document. Results stream out in completion order; the caller dedups by id (exactly-once).

Why not Ray Data `map_batches`: its unit is one batch per call, so a variable-length
plan->write loop would either wait on whole batches or need one stage per step with a barrier
(DESIGN.md §4); the actor pool keeps the engine full and lets us count and resume steps.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from typing import Iterable, Iterator

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

ACTOR_LOST = (RayActorError, ActorDiedError)
UNAVAILABLE_WAIT_S = 600  # an actor restarting (engine start) answers "unavailable" meanwhile


def run_pool(actors: list, rows: Iterable[dict], journal_uri: str, agentwrite_cfg,
             storage_cfg=None, in_flight: int = 64, max_attempts: int = 3) -> Iterator[dict]:
    """Yield one result per instruction: {"status": "ok"|"reject", ...}."""
    pending = deque(rows)
    attempts: Counter = Counter()
    waited: dict[str, float] = {}
    refs: dict = {}
    load = [0] * len(actors)
    while pending or refs:
        while pending and min(load) < in_flight:
            i = load.index(min(load))
            row = pending.popleft()
            refs[actors[i].run_instruction.remote(row, journal_uri, agentwrite_cfg,
                                                 storage_cfg)] = (i, row)
            load[i] += 1
        ready, _ = ray.wait(list(refs), num_returns=1)
        more, _ = ray.wait([r for r in refs if r not in ready], num_returns=len(refs) - 1,
                           timeout=0) if len(refs) > 1 else ([], None)
        for ref in ready + more:
            i, row = refs.pop(ref)
            load[i] -= 1
            try:
                yield ray.get(ref)
            except ActorUnavailableError:  # restarting: not a failed attempt, wait and resend
                waited[row["id"]] = waited.get(row["id"], time.time())
                if time.time() - waited[row["id"]] > UNAVAILABLE_WAIT_S:
                    yield {"status": "reject", "id": row["id"], "stage": "engine",
                           "reason": f"actor_unavailable_for_{UNAVAILABLE_WAIT_S}s"}
                else:
                    time.sleep(0.5)
                    pending.appendleft(row)
            except ACTOR_LOST as e:
                attempts[row["id"]] += 1
                if attempts[row["id"]] >= max_attempts:
                    yield {"status": "reject", "id": row["id"], "stage": "engine",
                           "reason": f"actor_lost_{max_attempts}_times: {type(e).__name__}"}
                else:
                    pending.appendleft(row)  # resumes from its journal on any live actor
            except RayTaskError as e:  # a bug or unexpected input in one row: record, go on
                cause = e.cause if getattr(e, "cause", None) else e
                yield {"status": "reject", "id": row["id"], "stage": "agentwrite",
                       "reason": f"internal_error: {type(cause).__name__}: {str(cause)[:300]}"}
