"""LongBench-Write and LongWrite-Ruler evaluation on Ray (DESIGN.md §1 step 4).

- config.py          EvalConfig: the published protocol as defaults
- longbench_data.py  the vendored LongBench-Write prompt sets (data/), a reject for every bad
                     line; other prompt sets scored the benchmark's way (custom_items)
- ruler.py           LongWrite-Ruler prompts and summary
- stages.py          the engine-stage tasks: GenerateTask (model under test), JudgeTask (judge)
- judge_prompt.py    the judge prompt, answer JSON schema, parsing/validation, fitting (pure)
- judge.py           judge calls with bounded retries, rate limit, the result cache
- scoring.py         pure functions: S_l, S_q, length buckets, bootstrap confidence intervals
- evaluate.py        the run: load, generate and judge on Ray with resume, results.json
- report.py          report.md and PNG plots next to results.json
- compare.py         the pipeline's before/after report (base vs trained model)
- contamination.py   refuses LongBench-Write prompts (normalized text or a shared 13-gram)
- length_sweep.py    the length sweep's measures and report (one model per SFT length cap)

Run it with
    python -m ray_jobs.evaluate --config ray_jobs/configs/evaluate.yaml \
        --set engine.model=... --set output=...
(`evaluate_tiny.yaml`: CPU plumbing; `evaluate_mini.yaml`: the mini pipeline's evaluation).
"""
