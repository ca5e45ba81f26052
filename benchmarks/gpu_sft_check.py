"""The SFT job end to end on one GPU without Ray (what the lent GPU machine can run).

    python benchmarks/gpu_sft_check.py --tokenizer DIR --out /tmp/gpu-sft

Builds a random-weight Llama model of the 1.2B shape with the given tokenizer (chat template),
writes LongWriter-like conversations (completions up to ~6k words), runs `ray_jobs.sft` with
num_workers 0 and use_gpu (varlen attention, bf16, gradient checkpointing), then checks the
varlen path against per-document SDPA and loads the export. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", default="/tmp/gpu-sft")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--small", action="store_true", help="a 2-layer model on CPU (dry run)")
    a = ap.parse_args()
    dev = "cpu" if a.small else "cuda"
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    base = os.path.join(a.out, "base")
    shape = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, intermediate_size=256) if a.small else dict(
        hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=8192)
    cfg = LlamaConfig(**shape, vocab_size=len(tok),
                      max_position_embeddings=32768, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(base)
    tok.save_pretrained(base)
    rng = random.Random(0)
    words = "the river light city winter music ocean letter stone garden market".split()
    with open(os.path.join(a.out, "data.jsonl"), "w") as f:
        for i in range(64):
            n = rng.randint(100, 1200) if a.small else rng.randint(300, 6000)
            body = " ".join(rng.choice(words) for _ in range(n))
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"Write {n} words about topic {i}."},
                {"role": "assistant", "content": body}]}) + "\n")
    from dataset_builder.core.config import load_config
    from ray_jobs.sft import main as sft
    from train.config import SFTConfig
    t = time.time()
    man = sft(load_config(SFTConfig, "ray_jobs/configs/sft.yaml", [
        f"model={base}", f"data={a.out}/data.jsonl", f"output={a.out}/run", "num_workers=0",
        f"max_steps={a.steps}", f"save_every={a.steps // 2}",
        "strategy=ddp", "progress=false", "warmup_ratio=0.1", "learning_rate=1e-4",
        f"use_gpu={not a.small}", f"max_length={2048 if a.small else 8192}"]))
    wall = time.time() - t

    # varlen on CUDA vs each document alone with causal SDPA
    from train.model import VARLEN, pack_tensors, register_varlen
    register_varlen()
    m = AutoModelForCausalLM.from_pretrained(f"{a.out}/run/model", dtype=torch.bfloat16,
                                             attn_implementation=VARLEN).to(dev).eval()
    ref = AutoModelForCausalLM.from_pretrained(f"{a.out}/run/model", dtype=torch.bfloat16,
                                               attn_implementation="sdpa").to(dev).eval()
    docs = [[rng.randrange(10, 40000) for _ in range(n)] for n in (700, 1500, 300)]
    p = pack_tensors(sum(docs, []), [0] * 2500, [len(d) for d in docs], dev)
    with torch.no_grad():
        packed = m(input_ids=p["input_ids"], position_ids=p["position_ids"],
                   cu_seq_lens_q=p["cu_seq_lens"], cu_seq_lens_k=p["cu_seq_lens"],
                   max_length_q=p["max_len"], max_length_k=p["max_len"]).logits[0].float()
        alone = torch.cat([ref(input_ids=torch.tensor([d], device=dev)).logits[0].float()
                           for d in docs])
    diff = (packed - alone).abs().max().item()
    scale = alone.abs().max().item()
    print(json.dumps({"sft_wall_s": round(wall, 1), "final_metrics": man["final_metrics"],
                      "data": man["data"], "varlen_vs_sdpa_max_abs_diff": diff,
                      "logit_scale": scale, "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu"}))


if __name__ == "__main__":
    main()
