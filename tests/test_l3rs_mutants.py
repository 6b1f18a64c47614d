"""L3RS returns the step's loss, as torch optimizers do, and a fixed step size is the update
size."""

from __future__ import annotations

import torch

from reasonlab.optim.l3rs import L3RS, L3RSConfig, MetaModel


def test_step_returns_the_closures_loss():
    cfg = L3RSConfig(directions=["sgd"], normalize="none", base_lr=0.1, state_features=False)
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = L3RS([p], MetaModel(cfg, 1))

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    out = opt.step(closure)
    assert isinstance(out, torch.Tensor) and out.item() == 5.0
    assert opt.step(loss=2.5) == 2.5
    assert torch.all(p.detach().abs() < torch.tensor([1.0, 2.0], dtype=torch.float64))
    q = torch.nn.Parameter(torch.ones(2))  # no gradient: nothing to update, the loss comes back
    assert L3RS([q], MetaModel(cfg, 1)).step(loss=7.0) == 7.0


def test_fixed_step_size_is_the_update_size():
    for extra in ({}, {"time_features": "both", "time_scales": [5.0], "horizon": 10}):
        cfg = L3RSConfig(directions=["sgd"], normalize="none", base_lr=0.1, state_features=False,
                         **extra)
        p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        opt = L3RS([p], MetaModel.fixed(cfg, 1, step=0.02))
        p.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        opt.step()
        want = torch.tensor([1 - 0.02, 1 + 0.04, 1 - 0.01], dtype=torch.float64)
        assert torch.allclose(p.detach(), want, rtol=0, atol=1e-12), extra
