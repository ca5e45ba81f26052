"""The shared layer: what every package (generation, curation, eval, train, jobs) may import.

- config.py        typed YAML configs (help on every field), hashes, code versions
- storage.py       fsspec URIs (local, s3://), manifest-committed datasets, JSON stores
- records.py       the data contracts: parquet schemas and the typed rows between stages
- text.py          word counts, language detection, normalization, stable ids
- instructions.py  instruction files (untrusted input) into rows and rejects; required lengths
- model_check.py   one line for a model that cannot load, before anything starts
- logs.py          the project's log lines
- ray_private.py   every private or experimental Ray API the project uses, each with why

It imports no other project module (tests/unit/test_imports.py).
"""
