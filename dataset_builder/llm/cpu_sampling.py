"""Top-p (nucleus) masking for vLLM on CPU without sorting the whole vocabulary.

vLLM's CPU sampler applies top-p by sorting every row of the logits ([batch, vocab]) each step;
with the demo model's 49,152-token vocabulary the sort costs about as much as the model
(docs/BENCHMARKS.md, "vLLM engine on CPU"). This module computes the same mask from the top K logits (a partial
selection): when the K most likely tokens already hold at least p of the probability, the nucleus
lies inside them and the mask is exactly the full-sort mask (up to float rounding at the
boundary); rows where it does not (a flat distribution) try a wider window, and only rows wider
than every window fall back to vLLM's own full sort. The second window matters for small models
under a repetition penalty, whose flat distributions sent many rows to the full-sort fallback
(the profile is in docs/BENCHMARKS.md).

It is installed into vLLM's worker processes as a vLLM general plugin (entry point
`vllm.general_plugins` in pyproject.toml), on CPU only; LONGWRITER_FAST_TOP_P=0 turns it off.
There is no maintained CPU alternative to use instead: vLLM's fast samplers (FlashInfer, aiter)
are GPU-only.
"""
from __future__ import annotations

import os

import torch

# 256 covers top_p <= 0.95 for nearly every row of a trained model's logits; 4096 catches the
# flat rows at a fraction of a full sort of the vocabulary.
TOP_K_WINDOWS = (256, 4096)


def top_p_from_top_k(logits: torch.Tensor, p: torch.Tensor, full_sort,
                     window: int | tuple[int, ...] = TOP_K_WINDOWS) -> torch.Tensor:
    """Mask (in place, -inf) every token outside each row's nucleus `p`; return `logits`.
    `window`: one size or increasing sizes tried in turn; `full_sort(logits, k, p)` is the
    exact fallback for rows whose nucleus is wider than the last. Rows with p >= 1 are left as
    they are (no nucleus cut)."""
    windows = (window,) if isinstance(window, int) else tuple(window)
    window = min(windows[0], logits.shape[-1])
    vals, idx = logits.topk(window, dim=-1)                        # descending
    probs = (vals.float() - torch.logsumexp(logits.float(), dim=-1, keepdim=True)).exp()
    higher = probs.cumsum(dim=-1) - probs                          # mass ranked above each token
    p = p.to(probs.dtype)
    cut = p < 1.0                                                  # p >= 1: no nucleus cut
    inside = cut & (probs.sum(dim=-1) >= p)                        # the nucleus fits the window
    wider = cut & ~inside
    rows = inside.nonzero().squeeze(1)
    if rows.numel():
        # A token is kept iff the mass ranked above it is < p (the full sort's rule, read from
        # the top); the most likely token always stays.
        kept = vals[rows].masked_fill(higher[rows] >= p[rows].unsqueeze(1), float("-inf"))
        sub = torch.full((rows.numel(), logits.shape[-1]), float("-inf"), dtype=logits.dtype)
        logits[rows] = sub.scatter_(1, idx[rows], kept)
    rows = wider.nonzero().squeeze(1)
    if rows.numel():
        rest = [w for w in windows[1:] if w < logits.shape[-1]]
        logits[rows] = top_p_from_top_k(logits[rows], p[rows], full_sort, tuple(rest)) if rest \
            else full_sort(logits[rows], None, p[rows])
    return logits


def register() -> None:
    """vLLM general plugin (runs in every vLLM process): swap in the windowed top-p on CPU."""
    if os.environ.get("LONGWRITER_FAST_TOP_P", "1") == "0":
        return
    from vllm.platforms import current_platform
    if not current_platform.is_cpu():
        return
    from vllm.v1.sample.ops import topk_topp_sampler as ops
    if getattr(ops.apply_top_k_top_p, "_longwriter", False):
        return
    full = ops.apply_top_k_top_p

    def apply_top_k_top_p(logits, k, p):
        if p is None or k is not None or logits.dim() != 2:
            return full(logits, k, p)  # top-k (alone or with top-p) keeps vLLM's path
        return top_p_from_top_k(logits, p, full)

    apply_top_k_top_p._longwriter = True
    ops.apply_top_k_top_p = apply_top_k_top_p
