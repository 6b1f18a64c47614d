"""The general per-parameter MLP learned optimizer: its update, files, and ES meta-training on a
distribution of tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reasonlab.config import ConfigError
from reasonlab.optim.envs import EnvSpec
from reasonlab.optim.es import ESConfig, MetaTrainConfig, es_task_plan, load_meta_run, meta_train
from reasonlab.optim.inner import OptSpec, Task, run_inner
from reasonlab.optim.lopt import LOptConfig, LOptModel, MLPLOpt

TINY = {"batch_size": 32, "hidden": [16], "pretrain_steps": 30}


def test_initial_update_is_normalized_momentum():
    cfg = LOptConfig(decays=[0.5, 0.9], base_lr=0.1)
    p = torch.nn.Parameter(torch.zeros(4))
    opt = MLPLOpt([p], LOptModel(cfg))
    grads = [torch.tensor([1.0, -2.0, 3.0, 0.5]), torch.tensor([-1.0, 1.0, 1.0, 2.0])]
    m, x = torch.zeros(4), torch.zeros(4)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        m = 0.9 * m + 0.1 * g
        x = x - 0.1 * m / (m.pow(2).mean().sqrt() + cfg.eps)
        torch.testing.assert_close(p.detach(), x, rtol=1e-5, atol=1e-6)
    # other meta-parameters give another update
    theta = LOptModel(cfg).theta.numpy().copy()
    theta[-1] = 1.0  # bias of the log-magnitude: exp(1) times larger steps
    q = torch.nn.Parameter(torch.zeros(4))
    opt2 = MLPLOpt([q], LOptModel(cfg, theta))
    q.grad = grads[0].clone()
    opt2.step()
    m1 = 0.1 * grads[0]
    torch.testing.assert_close(q.detach(), -0.1 * np.e * m1 / m1.pow(2).mean().sqrt(),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="lopt.hidden"):
        LOptConfig(hidden=0)


def test_meta_trained_on_a_task_distribution_reduces_the_loss(tmp_path):
    cfg = MetaTrainConfig(
        seed=1, learner="lopt", env=EnvSpec("digits", TINY),
        extra_envs=[EnvSpec("digits", {**TINY, "hidden": [8, 8]}),
                    EnvSpec("digits", {**TINY, "variant": "shift"})],
        lopt=LOptConfig(hidden=8),
        es=ESConfig(steps=4, pairs=3, horizon=15, horizons=[10, 20], train_seeds=[0, 1, 2],
                    workers=1, sigma=0.05))
    envs, hs = es_task_plan(cfg, 0)
    assert len(envs) == 3 and set(hs) <= {10, 20}
    plans = [es_task_plan(cfg, k) for k in range(6)]
    assert len({e.key() for p in plans for e in p[0]}) > 1  # the pairs see several tasks
    meta = meta_train(cfg, tmp_path / "lopt", progress=False)
    loaded = load_meta_run(tmp_path / "lopt")
    assert isinstance(loaded, LOptModel) and np.array_equal(loaded.theta.numpy(),
                                                            meta.theta.numpy())
    assert not np.array_equal(meta.theta.numpy(), LOptModel(cfg.lopt).theta.numpy())
    res = json.loads((tmp_path / "lopt" / "results.json").read_text())
    assert res["kind"] == "lopt" and res["n_envs"] == 3
    # applied unchanged to an unseen seed of a micro task: the training loss goes down
    r = run_inner(Task(EnvSpec("digits", TINY), OptSpec.from_meta(meta), 77, 30, curve=True))
    assert not r["diverged"]
    assert np.mean(r["losses"][-5:]) < 0.7 * r["losses"][0]
