"""Progress counts travel from engine replicas to the job's board while the job runs (not only
at its end): a row waits inside a real Ray Data engine stage until the board has counted
another row that finished in that replica. Deterministic: both rows are in flight at once,
and the waiting row gives up (a reject, so the test fails) only after a minute."""
import asyncio
import json
import time

import pytest

from dataset_builder.core import progress
from dataset_builder.core.records import todo
from dataset_builder.llm.base import EngineConfig
from dataset_builder.llm.stage import engine_stage, engines_up

pytestmark = pytest.mark.integration


class WaitForBoard:
    """Row "a" finishes at once (and counts 5 units); row "b" finishes once the board shows
    row "a" counted."""
    stage, accepts, engine_key = "probe", ("todo",), "engine"

    def __init__(self, board):
        self.board = board

    async def run(self, engine, item: dict) -> dict:
        if item["id"] == "a":
            progress.add(probe_units=5)
            return {"status": "ok"}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            counts, _, _ = await self.board.snapshot.remote()
            if counts.get("probe_ok", 0) >= 1:
                return {"status": "ok", "seen": counts}
            await asyncio.sleep(0.2)
        return {"status": "reject", "stage": "probe", "reason": "row a was never counted"}


def test_replica_counts_reach_the_board_while_the_job_runs(tiny_engine, ray_local):
    import ray
    cfg = EngineConfig(attach="tiny-engine", in_flight=2)
    line = lambda c, g, a: json.dumps(c)  # noqa: E731
    with engines_up(cfg) as up, progress.Console("probe", True, 3600, line) as con:
        ds = ray.data.from_items([todo({"id": i, "prompt": "x"}) for i in ("a", "b")])
        rows = {r["id"]: r for r in engine_stage(ds, cfg, WaitForBoard, {"board": con.board}, up,
                                                 con.board).take_all()}
    b = json.loads(rows["b"]["payload"])
    assert rows["b"]["status"] == "ok", b
    assert b["seen"]["probe_ok"] == 1 and b["seen"]["probe_units"] == 5
