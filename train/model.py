"""The model side of SFT: document-masked attention over packs and the token-averaged loss.

A pack is several whole documents in one row, position ids restarting at each. Attention must
never cross documents:
- `varlen` (registered with transformers as "lw_varlen"): on CUDA, torch's own varlen flash
  attention over cumulative document lengths, which skips cross-document blocks (faster than
  SDPA with a block mask: docs/BENCHMARKS.md); elsewhere the same
  function runs causal SDPA per document (exact, and only sum(L^2) work instead of T^2).
- `sdpa` / `eager`: transformers builds a block-diagonal mask from the restarting position ids.

`PackLoss` wraps the causal LM so DDP/FSDP see one module whose forward returns the summed NLL
over a pack's target tokens; logits are made only at target positions, a chunk at a time.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

VARLEN = "lw_varlen"


def _torch_varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, False
    return varlen_attn, "enable_gqa" in inspect.signature(varlen_attn).parameters


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None,
                             dropout=0.0, cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """transformers attention function: q (1, H, T, D), k/v (1, Hkv, T, D) -> (1, T, H, D)."""
    if cu_seq_lens_q is None:  # no pack metadata (e.g. generation): plain causal attention
        t = query.shape[2]
        cu_seq_lens_q, max_length_q = torch.tensor([0, t], device=query.device), t
    fn, has_gqa = _torch_varlen()
    if query.is_cuda and fn is not None:
        # Under autocast, rotary embeddings leave q/k in fp32 while v is bf16; flash needs one
        # 16-bit dtype (SDPA is on autocast's list and casts itself; a custom op is not).
        dt = (torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda")
              else value.dtype)
        q, k, v = (x[0].transpose(0, 1).to(dt) for x in (query, key, value))  # (T, heads, D)
        extra = {}
        if k.shape[1] != q.shape[1]:
            if has_gqa:
                extra["enable_gqa"] = True
            else:
                rep = q.shape[1] // k.shape[1]
                k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        cu = cu_seq_lens_q.to(torch.int32)
        out = fn(q, k, v, cu, cu, int(max_length_q), int(max_length_q), scale=scaling,
                 window_size=(-1, 0), **extra)
        return out.unsqueeze(0), None
    bounds = cu_seq_lens_q.tolist()
    outs = [F.scaled_dot_product_attention(
        query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling,
        enable_gqa=key.shape[1] != query.shape[1]) for a, b in zip(bounds[:-1], bounds[1:])]
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None  # varlen attention takes document boundaries, not a mask


def register_varlen() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
    AttentionInterface.register(VARLEN, varlen_attention_forward)
    AttentionMaskInterface.register(VARLEN, _no_mask)


def load_model(path: str, dtype: str, attention: str, gradient_checkpointing: bool):
    from transformers import AutoModelForCausalLM
    impl = {"varlen": VARLEN}.get(attention, attention)
    if impl == VARLEN:
        register_varlen()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype),
                                                 attn_implementation=impl)
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def pack_tensors(input_ids: list[int], mask: list[int], seq_lengths: list[int],
                 device="cpu") -> dict:
    """One pack -> the model's inputs and the targets: position ids restart per document;
    target j is token t predicted from position t-1, for mask[t] = 1 inside a document (a
    document's first token has no prediction within it)."""
    lengths = torch.tensor(seq_lengths, dtype=torch.long)
    starts = torch.cumsum(lengths, 0) - lengths
    pos = torch.arange(int(lengths.sum())) - torch.repeat_interleave(starts, lengths)
    m = torch.tensor(mask, dtype=torch.bool)
    m[starts] = False
    tgt = torch.nonzero(m).squeeze(1)
    cu = torch.cat([torch.zeros(1, dtype=torch.int32), torch.cumsum(lengths, 0).to(torch.int32)])
    ids = torch.tensor(input_ids, dtype=torch.long)
    return {"input_ids": ids[None].to(device), "position_ids": pos[None].to(device),
            "src": (tgt - 1).to(device), "labels": ids[tgt].to(device),
            "cu_seq_lens": cu.to(device), "max_len": int(lengths.max())}


class LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden_i @ weight.T, labels_i), a chunk of rows at a time, with the gradients
    of hidden and weight computed in the same pass: no (tokens x vocab) logits are kept, and
    nothing is recomputed in backward (checkpointing the chunks instead cost ~7% of a 1.2B
    step: the LM head's forward again). Hand-written because the maintained fused kernels
    (Liger) are CUDA/Triton only and this must run on CPU too."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk: int, dtype):
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_grad else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_grad else None
        w = weight.to(dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h, y = hidden[start:start + chunk].to(dtype), labels[start:start + chunk]
            logits = (h @ w.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if not need_grad:
                continue
            d = torch.exp(logits.sub_(lse[:, None]))            # softmax, in place
            d[torch.arange(len(y), device=y.device), y] -= 1.0   # d CE / d logits
            d = d.to(dtype)
            grad_h[start:start + chunk] = (d @ w).to(hidden.dtype)
            grad_w += (d.T @ h).float()
        if need_grad:
            ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, g):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * g, grad_w * g, None, None, None


class PackLoss(nn.Module):
    """forward(pack) -> summed NLL over the pack's target tokens (a 0-d tensor). On the side
    (no gradient) it adds up the NLL and count of end-of-turn targets (the model's EOS ids) in
    `eot_nll`, `eot_n`: whether the model learns where an answer ends (the length sweep)."""

    def __init__(self, lm: nn.Module, chunk_tokens: int = 4096):
        super().__init__()
        self.lm, self.chunk = lm, chunk_tokens
        eos = lm.config.eos_token_id
        self.eot_ids = torch.tensor([eos] if isinstance(eos, int) else list(eos or []),
                                    dtype=torch.long)
        self.eot_nll, self.eot_n = 0.0, 0

    def _eot(self, hidden, weight, labels) -> None:
        at = torch.isin(labels, self.eot_ids.to(labels.device))
        if not bool(at.any()):
            return
        with torch.no_grad():
            logits = hidden.detach()[at].float() @ weight.detach().float().T
            self.eot_nll += float(nn.functional.cross_entropy(logits, labels[at], reduction="sum"))
            self.eot_n += int(at.sum())

    def forward(self, input_ids, position_ids, src, labels, cu_seq_lens, max_len):
        kwargs = {}
        if self.lm.config._attn_implementation == VARLEN:
            kwargs = {"cu_seq_lens_q": cu_seq_lens, "cu_seq_lens_k": cu_seq_lens,
                      "max_length_q": max_len, "max_length_k": max_len}
        hidden = self.lm.base_model(input_ids=input_ids, position_ids=position_ids,
                               **kwargs).last_hidden_state[0]
        hidden = hidden.index_select(0, src)
        weight = self.lm.get_output_embeddings().weight
        dtype = (torch.get_autocast_dtype(hidden.device.type)
                 if torch.is_autocast_enabled(hidden.device.type) else weight.dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            self._eot(hidden, weight, labels)
            return LinearCrossEntropy.apply(hidden, weight, labels, self.chunk, dtype)
