"""Curation stage: AgentWrite generations -> LongWriter-6k shards (DESIGN.md §5).

postprocess (clean paragraphs) -> validate (generation records) and filters (quality) -> dedup (exact, MinHash/LSH)
-> shards (messages parquet, _rejects/, _stats.json) -> report (report.md/json, plots).
Entry point: `pipeline.run_curation(CurateConfig)`; job: ray_jobs/curate.py.
"""
