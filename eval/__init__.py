"""LongBench-Write and LongWrite-Ruler evaluation on Ray (DESIGN.md §1 step 4).

- scoring.py  pure functions: S_l, S_q, length buckets, bootstrap confidence intervals
- judge.py    the judge prompt, JSON schema, parsing/validation, bounded retries, cache
- longbench.py benchmark loading (malformed lines become rejects), generation and judging on
              Ray with resume, aggregation into results.json
- ruler.py    LongWrite-Ruler prompts and summary
- report.py   report.md and PNG plots
- config.py   EvalConfig

Run it with `python ray_jobs/evaluate.py --config ray_jobs/configs/evaluate.yaml`.
"""
