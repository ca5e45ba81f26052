"""Test helpers shared by several test files (one place: no test imports another test file or
conftest). Fixtures stay in conftest.py; fakes and small tools live here."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import psutil

from dataset_builder.core import storage
from dataset_builder.llm.base import Completion
from eval.scoring import DIMENSIONS

# An AgentWrite plan in the paper's format (two paragraphs of 300 words).
PLAN = ("Paragraph 1 - Main Point: Rivers shape cities - Word Count: 300 words\n"
        "Paragraph 2 - Main Point: Floods and flood defences - Word Count: 300 words\n")

# A judge answer with every dimension rated 4.
GOOD = {d: 4 for d in DIMENSIONS}
GOOD_TEXT = json.dumps(GOOD)


class FakeJudge:
    """Answers from a script, one per call; an Exception instance is raised instead."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    async def __call__(self, messages, sampling):
        self.calls.append(sampling)
        a = self.answers.pop(0) if self.answers else ""
        if isinstance(a, Exception):
            raise a
        return Completion(text=a, finish_reason="stop", prompt_tokens=10, output_tokens=5)


def engine_stage_without_ray(engine, task, where: str = "{}", in_flight: int = 8):
    """llm.stage.EngineStage around a given engine and task: the row handling only, no Ray,
    no model (unit tests of what the stage does with rows, results and exceptions)."""
    from dataset_builder.llm.stage import EngineStage
    stage = EngineStage.__new__(EngineStage)
    stage.engine, stage.task, stage.where = engine, task, where
    stage._slots = asyncio.Semaphore(in_flight)
    return stage


def chat_with_export(uri: str, local, name: str):
    """An exported model (`uri`, local or s3://) copied to `local` and served by the project's
    vLLM engine in a Ray actor: one short greedy answer (a Completion); the engine is stopped."""
    import ray

    from dataset_builder.core import storage
    from dataset_builder.llm import EngineConfig, Sampling
    from dataset_builder.llm.actor import start_engines
    fs, path = storage.get_fs(uri)
    fs.get(path + "/", str(local) + "/", recursive=True)
    [engine] = start_engines(EngineConfig(model=str(local), max_model_len=1024, max_num_seqs=4,
                                          cpu_kvcache_gib=1, num_cpus=1), 1, name=name)
    try:
        return ray.get(engine.chat.remote([{"role": "user", "content": "Write about owls."}],
                                          Sampling(max_tokens=12, temperature=0.0)))
    finally:
        ray.kill(engine)


def train_workers() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]


def kill_a_worker_after_checkpoint(out: str, result: dict) -> None:
    """SIGKILL one training worker process as soon as Ray Train has registered a checkpoint
    (its snapshot on S3 lists one; a checkpoint folder alone may not be registered yet)."""
    snapshot = f"{out}/train/checkpoint_manager_snapshot.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if storage.exists(snapshot) and storage.read_json(snapshot).get("checkpoint_results"):
            workers = train_workers()
            if workers:
                os.kill(workers[-1].pid, signal.SIGKILL)
                result["killed"] = workers[-1].pid
                return
        time.sleep(0.2)
