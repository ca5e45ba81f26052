"""The SFT loss is the average over every target token of the global batch (packs, accumulation
steps and workers), the paper's fix: checked against a hand-computed token average, in one
process and on 2 gloo workers with DDP (no Ray)."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

from dataset_builder.llm.server import free_port
from train.loop import _wrap, accumulate, schedule
from train.model import PackLoss, load_model, pack_tensors

# 4 packs with very different numbers of target tokens: a per-sequence mean would weigh the
# 2-target pack like the 30-target one.
PACKS = [
    ([3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 1, 1], [6]),
    ([9 + i for i in range(32)], [0, 0] + [1] * 30, [32]),
    ([50, 51, 52, 53, 60, 61, 62, 63, 64], [0, 1, 1, 1, 0, 0, 1, 1, 1], [4, 5]),
    ([100 + i for i in range(12)], [0] * 4 + [1] * 8, [12]),
]


def _model(path):
    torch.manual_seed(0)
    return PackLoss(load_model(path, "float32", "sdpa", gradient_checkpointing=False), chunk_tokens=7)


def _hand_average(model) -> torch.Tensor:
    """mean over all target tokens of -log p, from full logits of each document alone."""
    lm, nll = model.lm, []
    for ids, mask, lengths in PACKS:
        off = 0
        for L in lengths:
            d, m = ids[off:off + L], mask[off:off + L]
            logp = torch.log_softmax(lm(input_ids=torch.tensor([d])).logits[0].float(), -1)
            nll += [-logp[t - 1, d[t]] for t in range(1, L) if m[t]]
            off += L
    return torch.stack(nll).mean()


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_accumulated_loss_is_the_global_token_average(tiny_model):
    ref = _model(tiny_model)
    loss = _hand_average(ref)
    loss.backward()
    model = _model(tiny_model)
    nll, n, _ = accumulate(model, [(pack_tensors(*p), sum(p[2])) for p in PACKS], 1, "cpu")
    assert n == 2 + 30 + 6 + 8
    assert abs(nll / n - loss.item()) < 1e-4
    torch.testing.assert_close(_grads(model), _grads(ref), atol=1e-5, rtol=1e-4)


def _worker(rank, world, port, path, out, strategy):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = _wrap(_model(path), SimpleNamespace(strategy=strategy), torch.device("cpu"))
    mine = [p for i, p in enumerate(PACKS) if i % world == rank]  # 2 packs per worker
    nll, n, _ = accumulate(model, [(pack_tensors(*p), sum(p[2])) for p in mine], world, "cpu")
    grads = torch.cat([(p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad)
                       .flatten() for p in model.parameters() if p.grad is not None])
    if rank == 0:
        torch.save({"grads": grads, "n": n}, out)
    dist.destroy_process_group()


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_workers_give_the_single_process_token_average(tiny_model, tmp_path, strategy):
    out = str(tmp_path / "grads.pt")
    mp.start_processes(_worker, args=(2, free_port(), tiny_model, out, strategy), nprocs=2,
                       start_method="spawn")
    ref = _model(tiny_model)
    _hand_average(ref).backward()
    got = torch.load(out)
    assert got["n"] == 46
    torch.testing.assert_close(got["grads"], _grads(ref), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n_packs,world,per_step", [(10, 2, 1), (7, 2, 2), (3, 4, 1)])
def test_schedule_covers_every_pack_once_per_epoch(n_packs, world, per_step):
    spe, slot = schedule(n_packs, world, per_step, seed=1)
    for epoch in range(2):
        seen = [slot(epoch * spe + s, m, r) for s in range(spe) for m in range(per_step)
                for r in range(world)]
        assert sorted(i for i in seen if i >= 0) == list(range(n_packs))
        assert seen.count(-1) == spe * world * per_step - n_packs
    assert slot(0, 0, 0) == schedule(n_packs, world, per_step, seed=1)[1](0, 0, 0)


def test_the_end_of_turn_loss_is_the_nll_of_the_eos_targets_alone(tiny_model):
    """PackLoss adds up, on the side, -log p of every target that is the model's EOS id: the
    length sweep's measure of whether a model learns where its answers end."""
    model = _model(tiny_model)
    eos = model.lm.config.eos_token_id
    ids, mask = [3, 4, 5, eos, 7, 8, eos], [0, 1, 1, 1, 0, 1, 1]
    nll, n, _ = accumulate(model, [(pack_tensors(ids, mask, [4, 3]), 7)], 1, "cpu")
    assert model.eot_n == 2
    lm, expected = model.lm, []
    for doc in ([3, 4, 5, eos], [7, 8, eos]):
        logp = torch.log_softmax(lm(input_ids=torch.tensor([doc])).logits[0].float(), -1)
        expected.append(-logp[len(doc) - 2, eos])
    assert abs(model.eot_nll - float(sum(expected))) < 1e-3
    assert model.eot_nll < nll          # a part of the summed loss, not all of it
