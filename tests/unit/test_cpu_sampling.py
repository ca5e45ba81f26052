"""The windowed top-p mask equals vLLM's full-sort mask (dataset_builder/llm/cpu_sampling.py)."""
import pytest
import torch

from dataset_builder.llm.cpu_sampling import top_p_from_top_k

ops = pytest.importorskip("vllm.v1.sample.ops.topk_topp_sampler")
full_sort = ops.apply_top_k_top_p_pytorch  # vLLM's own CPU path (the plugin may wrap the other)


def _logits(rows: int, vocab: int, peaked: bool, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, vocab, generator=g) * 2
    if peaked:  # a trained model: a few dozen tokens hold nearly all the mass
        top = torch.randint(0, vocab, (rows, 40), generator=g)
        x.scatter_(1, top, torch.rand(rows, 40, generator=g) * 6 + 12)
    return x / 0.8


@pytest.mark.parametrize("peaked", [True, False])
def test_window_mask_equals_full_sort(peaked):
    logits = _logits(32, 5000, peaked, seed=1)
    p = torch.linspace(0.5, 0.99, 32)
    p[:3] = 1.0  # requests without top-p share the batch
    want = full_sort(logits.clone(), None, p)
    calls = []

    def fallback(x, k, pp):
        calls.append(x.shape[0])
        return full_sort(x, k, pp)
    got = top_p_from_top_k(logits.clone(), p, fallback, window=256)
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    assert torch.equal(got[torch.isfinite(got)], logits[torch.isfinite(got)])
    assert torch.isfinite(got).sum(1).min() >= 1  # the most likely token always survives
    # peaked rows are answered from the window; flat rows with a nucleus over 256 tokens fall
    # back to the full sort (and only they do)
    wide = [i for i in range(3, 32) if torch.isfinite(want[i]).sum() > 256]
    assert sum(calls) == len(wide) and (wide == [] if peaked else len(wide) > 0)


def test_registered_as_vllm_plugin_and_switchable(monkeypatch):
    from importlib.metadata import entry_points

    from dataset_builder.llm import cpu_sampling
    eps = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert eps.get("longwriter_fast_top_p") == "dataset_builder.llm.cpu_sampling:register"
    original = ops.apply_top_k_top_p
    try:
        monkeypatch.setenv("LONGWRITER_FAST_TOP_P", "0")
        cpu_sampling.register()
        assert ops.apply_top_k_top_p is original
        monkeypatch.delenv("LONGWRITER_FAST_TOP_P")
        cpu_sampling.register()
        patched = ops.apply_top_k_top_p
        assert patched._longwriter
        logits = _logits(4, 5000, True, seed=2)
        p = torch.full((4,), 0.9)
        assert torch.equal(torch.isfinite(patched(logits.clone(), None, p)),
                           torch.isfinite(full_sort(logits.clone(), None, p)))
    finally:
        ops.apply_top_k_top_p = original


def test_second_window_catches_flat_rows_before_the_full_sort():
    logits = _logits(32, 5000, peaked=False, seed=3)
    p = torch.linspace(0.5, 0.99, 32)
    want = full_sort(logits.clone(), None, p)
    calls = []

    def fallback(x, k, pp):
        calls.append(x.shape[0])
        return full_sort(x, k, pp)
    got = top_p_from_top_k(logits.clone(), p, fallback, window=(256, 2048))
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    wider = [i for i in range(32) if torch.isfinite(want[i]).sum() > 2048]
    within = [i for i in range(32) if 256 < torch.isfinite(want[i]).sum() <= 2048]
    assert within and sum(calls) == len(wider)   # rows of 257-2048 tokens never hit the sort
