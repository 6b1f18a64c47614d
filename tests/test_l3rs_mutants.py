"""L3RS returns the step's loss, as torch optimizers do, with or without parameters to update."""

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
