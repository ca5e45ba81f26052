"""SFT and DPO on Ray Train + TRL, and the preference pairs DPO trains on.

- config.py      SFTConfig and DPOTrainConfig (the paper's recipes as defaults)
- data.py        conversations -> checked rows -> token ids with assistant-only targets -> packs
- model.py       document-masked attention over packs (varlen on CUDA) and the token-averaged loss
- loop.py        the per-worker SFT loop (a Ray Train worker, or one plain process)
- checkpoint.py  where a worker's checkpoints live (Ray Train storage, or a folder without Ray)
- sft.py         the SFT driver: inputs, packs, rejects, the loop on Ray Train, export
- export.py      the model directory (manifest last), metrics.jsonl, report
- pair_rules.py  preference-pair rules (pure): combined score, chosen, rejected
- pairs.py       the pairs job: k samples per instruction, judged (S_q) and S_l, -> pairs
- dpo.py         DPO with TRL's DPOTrainer on Ray Train
- cut.py         the length sweep's cut of SFT answers to a word cap

Run them with
    python -m ray_jobs.sft --config ray_jobs/configs/sft.yaml --set model=... --set data=...
    python -m ray_jobs.pairs --config ray_jobs/configs/pairs.yaml --set model=... --set data=...
    python -m ray_jobs.dpo --config ray_jobs/configs/dpo.yaml --set model=... --set data=...
(each with `--set output=...`; `*_tiny.yaml` and `*_demo.yaml` run on CPU).
"""
