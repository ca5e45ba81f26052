"""SFT throughput: ours vs TRL's SFTTrainer (padded, and packed bfd) vs a plain loop over packs.

    python benchmarks/train.py                  # CPU, a small Llama shape, a few minutes
    python benchmarks/train.py --device cuda    # the 1.2B Llama shape of DESIGN.md §11, 8k tokens

One run, one model shape, one set of documents with a LongWriter-like spread (prompts 2-5% of
max_length, completions 15-100% of it), same dtype, same gradient checkpointing, random
weights (no hub). Real tokens/s counts document tokens only (no padding), after `--warmup`
steps. The plain loop is the ceiling: full packs of max_length tokens, causal attention over
the whole pack (no document mask), HF's own loss over every position.
The last line is one JSON object with the ratios.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time

import torch

SHAPES = {  # name: (hidden, layers, heads, kv_heads, intermediate, vocab)
    "cpu-small": (384, 6, 6, 2, 1024, 8192),
    "llama-1.2b": (2048, 16, 32, 8, 8192, 128256),
}


def make_model(shape: str, dtype, attn: str, device, gc: bool, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    from train.model import VARLEN, register_varlen
    h, n, heads, kv, inter, vocab = SHAPES[shape]
    if attn == VARLEN:
        register_varlen()
    cfg = LlamaConfig(hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
                      num_key_value_heads=kv, intermediate_size=inter, vocab_size=vocab,
                      max_position_embeddings=32768, tie_word_embeddings=False,
                      attn_implementation=attn, use_cache=False)
    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the GPU: a 1.2B init on CPU takes ~15 s
        model = LlamaForCausalLM(cfg).to(dtype=dtype).train()
    if gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def make_docs(n: int, max_length: int, vocab: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        p = rng.randint(int(0.02 * max_length), int(0.05 * max_length))
        c = min(max_length - p, rng.randint(int(0.15 * max_length), max_length))
        ids = [rng.randrange(2, vocab) for _ in range(p + c)]
        docs.append({"id": str(len(docs)), "input_ids": ids, "mask": [0] * p + [1] * c})
    return docs


def _optim(model, device):
    return torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1,
                             **({"fused": True} if device.type == "cuda" else {}))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(times: list[float], tokens: list[int], warmup: int) -> float:
    """Real tokens/s over the steps after `warmup` (times: end of each step, times[0] = start)."""
    w = min(warmup, len(tokens) - 1)
    return sum(tokens[w:]) / (times[-1] - times[w])


def run_ours(a, docs, device, dtype, pack_length: int) -> dict:
    from train.data import pack
    from train.loop import accumulate
    from train.model import VARLEN, PackLoss, pack_tensors
    table = pack(docs, pack_length)
    lm = make_model(a.shape, dtype, VARLEN, device, a.gc)
    model, optim = PackLoss(lm, 4096), _optim(lm, device)
    times, tokens = [time.perf_counter()], []
    for i in range(table.num_rows):
        lengths = table["seq_lengths"][i].as_py()
        b = pack_tensors(table["input_ids"][i].as_py(), table["mask"][i].as_py(), lengths, device)
        accumulate(model, [(b, sum(lengths))], 1, device, autocast=a.mixed)
        optim.step()
        optim.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter())
        tokens.append(sum(lengths))
    return {"tok_s": _rate(times, tokens, a.warmup), "steps": len(tokens),
            "packing_efficiency": sum(tokens) / (len(tokens) * pack_length)}


def run_plain(a, docs, device, dtype, steps: int) -> dict:
    """The ceiling: full max_length packs, causal SDPA over the whole pack, HF loss."""
    flat = [t for d in docs for t in d["input_ids"]]
    lm = make_model(a.shape, dtype, "sdpa", device, a.gc)
    optim = _optim(lm, device)
    times, tokens = [time.perf_counter()], []
    for i in range(steps):
        ids = torch.tensor(flat[i * a.max_length:(i + 1) * a.max_length], device=device)[None]
        if ids.shape[1] < a.max_length:
            break
        with torch.autocast(device.type, torch.bfloat16, enabled=a.mixed):
            loss = lm(input_ids=ids, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter())
        tokens.append(ids.shape[1])
    return {"tok_s": _rate(times, tokens, a.warmup), "steps": len(tokens)}


def _tolerant_dataset_hashing() -> None:
    """datasets fingerprints every Dataset by pickling it with dill; on the GPU machine
    (Python 3.12, dill 0.4.1) that raised "Can't pickle MonthDayNano" for any Arrow table.
    A random fingerprint is what datasets itself falls back to for unhashable transforms."""
    import uuid

    from datasets.fingerprint import Hasher
    orig = Hasher.hash.__func__

    def safe(cls, value):
        try:
            return orig(cls, value)
        except Exception:
            return uuid.uuid4().hex
    Hasher.hash = classmethod(safe)


def run_trl(a, docs, device, dtype, packed: bool) -> dict:
    from datasets import Dataset
    _tolerant_dataset_hashing()
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from trl import SFTConfig, SFTTrainer
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(
        {"<pad>": 0, "<eos>": 1}, unk_token="<pad>")), pad_token="<pad>", eos_token="<eos>")
    ds = Dataset.from_dict({"input_ids": [d["input_ids"] for d in docs],
                            "completion_mask": [d["mask"] for d in docs]})
    lm = make_model(a.shape, dtype, "sdpa", device, a.gc)
    times, tokens = [], []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not times:
                _sync(device)
                times.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            _sync(device)
            times.append(time.perf_counter())

    args = SFTConfig(output_dir="/tmp/bench-trl", max_length=a.max_length, packing=packed,
                     packing_strategy="bfd", per_device_train_batch_size=1 if packed else a.batch,
                     num_train_epochs=1, learning_rate=1e-5, report_to="none", save_strategy="no",
                     logging_steps=10**6, disable_tqdm=True, bf16=dtype == torch.bfloat16 or a.mixed,
                     gradient_checkpointing=a.gc, use_cpu=device.type == "cpu",
                     dataloader_num_workers=0, shuffle_dataset=False, seed=0)
    trainer = SFTTrainer(model=lm, args=args, train_dataset=ds, processing_class=tok,
                         callbacks=[Clock()])
    collate = trainer.data_collator

    def counting(batch):
        out = collate(batch)
        m = out.get("attention_mask")
        tokens.append(int(m.sum()) if m is not None else out["input_ids"].numel())
        return out
    trainer.data_collator = counting
    trainer.train()
    tokens = tokens[:len(times) - 1]
    return {"tok_s": _rate(times, tokens, a.warmup), "steps": len(tokens)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--shape", default=None, help=f"one of {list(SHAPES)}")
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--docs", type=int, default=None)
    ap.add_argument("--batch", type=int, default=4, help="TRL padded batch size")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", default="ours,ours_pack2x,trl_default,trl_packed,plain")
    ap.add_argument("--precision", default=None, choices=["bf16", "bf16-mixed", "fp32"],
                    help="same for every run; default bf16 on cuda (as DESIGN.md §11), fp32 on cpu")
    a = ap.parse_args(argv)
    cuda = a.device == "cuda"
    a.shape = a.shape or ("llama-1.2b" if cuda else "cpu-small")
    a.max_length = a.max_length or (8192 if cuda else 1024)
    a.docs = a.docs or (64 if cuda else 24)
    a.gc = cuda  # activations of long packs need it on GPU; CPU memory does not
    device = torch.device("cuda" if cuda else "cpu")
    a.precision = a.precision or ("bf16" if cuda else "fp32")
    a.mixed = a.precision == "bf16-mixed"  # fp32 weights, bf16 autocast (TRL: bf16=True)
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    if not cuda:
        torch.set_num_threads(max(1, torch.get_num_threads()))
    docs = make_docs(a.docs, a.max_length, SHAPES[a.shape][-1])
    res = {}
    for name in a.runs.split(","):
        t = time.perf_counter()
        if name == "ours":
            res[name] = run_ours(a, docs, device, dtype, a.max_length)
        elif name == "ours_pack2x":  # same documents, packs of 2 x max_length
            res[name] = run_ours(a, docs, device, dtype, 2 * a.max_length)
        elif name == "plain":
            res[name] = run_plain(a, docs, device, dtype, res.get("ours", {}).get("steps", 16))
        else:
            res[name] = run_trl(a, docs, device, dtype, packed=name == "trl_packed")
        res[name]["wall_s"] = time.perf_counter() - t
        if cuda:
            torch.cuda.empty_cache()
        print(f"{name:12s} {res[name]['tok_s']:10.0f} tok/s  {res[name]['steps']:4d} steps  "
              f"{res[name]['wall_s']:6.1f} s", file=sys.stderr, flush=True)
    dev = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"\n{'run':12s} {'real tok/s':>10s} {'vs ours':>8s}   ({dev}, {a.shape}, "
          f"max_length {a.max_length}, {a.docs} docs, {a.precision})")
    for name, r in res.items():
        print(f"{name:12s} {r['tok_s']:10.0f} {r['tok_s'] / res['ours']['tok_s']:8.2f}")

    def ratio(other):
        return round(res["ours"]["tok_s"] / res[other]["tok_s"], 3) if other in res else None
    out = {"ours_vs_trl_default": ratio("trl_default"), "ours_vs_trl_packed": ratio("trl_packed"),
           "ours_vs_plain_ceiling": ratio("plain"),
           "packing_efficiency": round(res["ours"]["packing_efficiency"], 4),
           "ours_pack2x_vs_plain_ceiling": (round(res["ours_pack2x"]["tok_s"] / res["plain"]["tok_s"], 3)
                                            if {"ours_pack2x", "plain"} <= set(res) else None),
           "packing_efficiency_pack2x": (round(res["ours_pack2x"]["packing_efficiency"], 4)
                                         if "ours_pack2x" in res else None),
           "device": dev,
           "shape": a.shape, "max_length": a.max_length, "docs": a.docs,
           "precision": a.precision,
           "tok_s": {k: round(v["tok_s"], 1) for k, v in res.items()}}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(
        __import__("os").path.abspath(__file__))))
    main()
