"""Where the generation job stops scaling: the real job (Ray Data, the engine stage, the
journal, the sink) on the instant engine (llm/instant_engine.py), so only the orchestration is
left, at 10k instructions by default (100k and 1M on request).

    python benchmarks/scale.py                          # 10k: run, rerun, resume, curate
    python benchmarks/scale.py --n 10000 100000         # several sizes
    python benchmarks/scale.py --n 1000000 --words 400 --only run   # 1M, ~50-word paragraphs
    python benchmarks/scale.py --n 10000 --only s3                  # S3 requests (moto)

Each run is `python -m ray_jobs.generate --config ray_jobs/configs/generate_instant.yaml` in
its own process with its own local Ray, watched with psutil every 0.5 s (benchmarks/proc.py).
Per N: instructions/s and engine requests/s, the driver's peak RSS, CPU milliseconds per
instruction by process kind (driver, engine replica, sink write tasks, the rest: what one
driver's core and each replica carry), journal objects, files and bytes on disk, writes/s, the
commit's seconds; a rerun that finds everything done; a resume after
the job was killed once half the rows were committed; curation (dedup included) of the
result. `--only s3`: a run and a rerun with the output on a moto server in this process that
counts requests by kind. Synthetic instructions: distinct prompts with `required_words` drawn from --words
(a range lo-hi or one number). Prints a table; last line one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import proc  # noqa: E402

CONFIG = "ray_jobs/configs/generate_instant.yaml"
GENRES = ["essay", "story", "guide", "report", "history", "explainer", "memoir", "review"]


def instructions(path: Path, n: int, words: tuple[int, int], seed: int = 0) -> None:
    """`n` distinct instructions (random topic words, so prompt dedup keeps them all)."""
    from dataset_builder.llm.instant_engine import _WORDS
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            w = rng.randrange(words[0], words[1] + 1, 100) if words[1] > words[0] else words[0]
            topic = " ".join(rng.choices(_WORDS, k=10))
            f.write(json.dumps({"prompt": f"Write a {w}-word {rng.choice(GENRES)} on {topic} "
                                          f"(number {i}).", "required_words": w}) + "\n")


def run_job(sets: list[str], log: Path, env: dict | None = None, module: str = "generate",
            config: str = CONFIG, kill_when=None) -> dict:
    return proc.run_job(module, config, sets, log, env, kill_when)


def disk(out: Path) -> dict:
    files = journal = 0
    size = 0
    for d, _, names in os.walk(out):
        for n in names:
            files += 1
            size += os.path.getsize(os.path.join(d, n))
            journal += "_journal" in d
    return {"files": files, "bytes": size, "journal_objects": journal}


def committed_rows(out: Path) -> int:
    """Rows the sink has committed so far (its markers, then the manifest)."""
    n = 0
    for sub in ("generations", "_rejects"):
        m = out / sub / "_manifest.json"
        if m.exists():
            try:
                n += json.loads(m.read_text())["rows"]
            except (ValueError, KeyError):
                pass
        for c in (out / sub / "_commits").glob("*.json"):
            try:
                n += json.loads(c.read_text())["rows"]
            except (ValueError, KeyError, OSError):
                pass
    return n


def one_size(n: int, args, work: Path) -> dict:
    inp = work / f"instructions-{n}-{args.words}.jsonl"
    if not inp.exists():
        instructions(inp, n, _range(args.words))
    base = [f"input={inp}", f"engine.instant.latency_s={args.latency}", *args.set]
    res: dict = {"n": n}
    out = work / f"out-{n}"
    if "run" in args.only:
        subprocess.run(["rm", "-rf", str(out)], check=True)
        r = run_job([*base, f"output={out}"], work / f"run-{n}.log")
        stats = json.loads((out / "_stats.json").read_text())
        d = disk(out)
        steps = stats["generated_steps"]
        res["run"] = {**r, **d, "written": stats["written_this_run"],
                      **{f"cpu_ms_per_instruction_{k}": round(1000 * r[f"cpu_{k}_s"] / n, 2)
                         for k in proc.KINDS},
                      "job_s": stats["wall_seconds"],
                      "instructions_per_s": round(n / r["wall_s"], 1),
                      "job_instructions_per_s": round(n / stats["wall_seconds"], 1),
                      "engine_steps_per_s": round(steps / stats["wall_seconds"], 1),
                      "writes_per_s": round(d["files"] / stats["wall_seconds"], 1),
                      "commit_s": stats.get("commit_seconds")}
        print(f"[{n:,}] run: {res['run']}", flush=True)
    if "rerun" in args.only:
        r = run_job([*base, f"output={out}"], work / f"rerun-{n}.log")
        res["rerun"] = {**r, "job_s": json.loads((out / "_stats.json").read_text())[
            "wall_seconds"]}
        print(f"[{n:,}] rerun: {res['rerun']}", flush=True)
    if "resume" in args.only:
        out2 = work / f"resume-{n}"
        subprocess.run(["rm", "-rf", str(out2)], check=True)
        first = run_job([*base, f"output={out2}"], work / f"killed-{n}.log",
                        kill_when=lambda: committed_rows(out2) >= n // 2)
        left = n - committed_rows(out2)
        r = run_job([*base, f"output={out2}"], work / f"resume-{n}.log")
        stats = json.loads((out2 / "_stats.json").read_text())
        res["resume"] = {"killed_after_s": first["wall_s"], "left": left, **r,
                         "rows_in_output": stats["rows_in_output"],
                         "resumed_steps": stats["resumed_steps"]}
        if "run" in res:  # the remaining work's time at the full run's rate
            res["resume"]["vs_remaining_work"] = round(
                r["wall_s"] / (res["run"]["wall_s"] * left / n), 2)
        print(f"[{n:,}] resume: {res['resume']}", flush=True)
    if "curate" in args.only:
        cur = work / f"curated-{n}"
        subprocess.run(["rm", "-rf", str(cur)], check=True)
        r = run_job([f"input={out}/generations", f"output={cur}",
                     "filters.min_response_words=" + str(_range(args.words)[0] // 2)],
                    work / f"curate-{n}.log", module="curate",
                    config="ray_jobs/configs/curate.yaml")
        st = json.loads((cur / "_stats.json").read_text())
        f = st["funnel"]
        res["curate"] = {**r, "rows_in": f["rows_in"], "rows_out": f["rows_out"],
                         "dropped": {s["stage"]: s["dropped"] for s in f["stages"]},
                         "rows_per_s": round(f["rows_in"] / r["wall_s"], 1)}
        print(f"[{n:,}] curate: {res['curate']}", flush=True)
    return res


def _range(spec: str) -> tuple[int, int]:
    lo, _, hi = spec.partition("-")
    return int(lo), int(hi or lo)


def s3_counts(n: int, args, work: Path) -> dict:
    """The run with its output on a moto server in this process that counts each request."""
    # moto's own ThreadedMotoServer, but with a WSGI wrapper that counts each request
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    counts: dict[str, int] = {}
    lock = threading.Lock()
    app = DomainDispatcherApplication(create_backend_app)

    def counting(environ, start_response):
        q, path = environ.get("QUERY_STRING", ""), environ.get("PATH_INFO", "")
        kind = environ["REQUEST_METHOD"]
        if kind == "GET" and ("list-type" in q or path.rstrip("/").count("/") <= 1):
            kind = "LIST"
        with lock:
            counts[kind] = counts.get(kind, 0) + 1
        return app(environ, start_response)

    class Quiet(MotoRequestHandler):  # a log line per request would slow the server
        def log_request(self, *args, **kwargs):
            pass

    server = make_server("127.0.0.1", 0, counting, threaded=True, request_handler=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY":
           "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    import boto3
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench").create_bucket(Bucket="scale")
    inp = work / f"instructions-{n}-{args.words}.jsonl"
    if not inp.exists():
        instructions(inp, n, _range(args.words))
    counts.clear()
    r = run_job([f"input={inp}", f"output=s3://scale/out-{n}", *args.set],
                work / f"s3-{n}.log", env=env)
    run_counts = dict(counts)
    counts.clear()
    rr = run_job([f"input={inp}", f"output=s3://scale/out-{n}", *args.set],
                 work / f"s3-rerun-{n}.log", env=env)
    server.shutdown()
    return {"n": n, "run": r, "requests": run_counts,
            "per_instruction": {k: round(v / n, 2) for k, v in run_counts.items()},
            "rerun": rr, "rerun_requests": dict(counts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000])
    ap.add_argument("--words", default="2000-5000", help="required words: lo-hi or one number")
    ap.add_argument("--latency", type=float, default=0.0, help="instant engine s/request")
    ap.add_argument("--only", nargs="+", default=["run", "rerun", "resume", "curate"],
                    choices=["run", "rerun", "resume", "curate", "s3"],
                    help="phases; s3: a run and a rerun at the first --n with the output on a "
                    "moto server that counts requests by kind")
    ap.add_argument("--dir", default=str(ROOT / "data" / "scale"))
    ap.add_argument("--set", action="append", default=[], help="extra job config overrides")
    args = ap.parse_args()
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    results = [one_size(n, args, work) for n in args.n] \
        if set(args.only) - {"s3"} else []
    s3 = s3_counts(args.n[0], args, work) if "s3" in args.only else None
    if s3:
        print(f"[{s3['n']:,}] s3: {s3}")
    print(json.dumps({"benchmark": "scale", "words": args.words, "latency_s": args.latency,
                      "sizes": results, "s3": s3}))


if __name__ == "__main__":
    main()
