"""Packing and attention isolation on the tiny random model (no Ray): a document packed with
others gives the same logits and the same loss as alone, whatever its neighbours are."""
from __future__ import annotations

import pytest
import torch

from train.model import PackLoss, load_model, pack_tensors

DOCS = [[5, 17, 300, 41, 9, 77, 12], [800, 3, 3, 901, 45], [60, 61, 62, 63, 64, 65, 66, 67, 68]]
MASKS = [[0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1, 1, 1]]


@pytest.fixture(scope="module", params=["sdpa", "varlen", "eager"])
def model(request, tiny_model):
    torch.manual_seed(0)
    return load_model(tiny_model, "float32", request.param, gradient_checkpointing=False).eval()


def _logits(model, docs):
    p = pack_tensors(sum(docs, []), [0] * sum(map(len, docs)), [len(d) for d in docs])
    kwargs = {}
    if model.config._attn_implementation == "lw_varlen":
        kwargs = {"cu_seq_lens_q": p["cu_seq_lens"], "cu_seq_lens_k": p["cu_seq_lens"],
                  "max_length_q": p["max_len"], "max_length_k": p["max_len"]}
    with torch.no_grad():
        return model(input_ids=p["input_ids"], position_ids=p["position_ids"], **kwargs).logits[0]


def test_packed_logits_equal_unpacked(model):
    packed = _logits(model, DOCS)
    off = 0
    for d in DOCS:
        alone = _logits(model, [d])
        torch.testing.assert_close(packed[off:off + len(d)], alone, atol=2e-4, rtol=1e-4)
        off += len(d)


def test_document_logits_do_not_see_their_neighbours(model):
    a = _logits(model, [DOCS[0], DOCS[1]])
    changed = [[(t * 7 + 1) % 1000 for t in DOCS[0]], DOCS[1]]
    b = _logits(model, changed)
    n = len(DOCS[0])
    torch.testing.assert_close(a[n:], b[n:], atol=2e-4, rtol=1e-4)
    assert not torch.allclose(a[:n], b[:n])  # the changed document did change


def test_pack_loss_is_the_sum_of_per_document_losses(model):
    loss = PackLoss(model, chunk_tokens=3)
    with torch.no_grad():
        packed = loss(**pack_tensors(sum(DOCS, []), sum(MASKS, []), [len(d) for d in DOCS]))
        alone = sum(loss(**pack_tensors(d, m, [len(d)])) for d, m in zip(DOCS, MASKS))
        # by hand: mean-free NLL of each target token from the full-sequence logits
        manual = 0.0
        for d, m in zip(DOCS, MASKS):
            logp = torch.log_softmax(_logits(model, [d]).float(), -1)
            manual += sum(-logp[t - 1, d[t]] for t in range(1, len(d)) if m[t])
    torch.testing.assert_close(packed, alone, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(packed, manual, atol=1e-3, rtol=1e-5)


def test_pack_tensors_targets_skip_document_starts():
    p = pack_tensors([1, 2, 3, 4, 5], [1, 1, 1, 1, 1], [2, 3])
    assert p["position_ids"].tolist() == [[0, 1, 0, 1, 2]]
    assert p["src"].tolist() == [0, 2, 3] and p["labels"].tolist() == [2, 4, 5]
    assert p["cu_seq_lens"].tolist() == [0, 2, 5] and p["max_len"] == 3


def test_packing_off_is_one_document_per_pack_in_order():
    from train.data import pack
    docs = [{"input_ids": list(range(n)), "mask": [1] * n} for n in (5, 3, 9, 2)]
    packed = pack(docs, 32)
    assert packed.num_rows == 1                       # all four fit one pack of 32
    alone = pack(docs, 32, packing=False)
    assert alone.schema.equals(packed.schema)
    assert [r["seq_lengths"] for r in alone.to_pylist()] == [[5], [3], [9], [2]]
    assert alone.to_pylist()[2]["input_ids"] == list(range(9))
