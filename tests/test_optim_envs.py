"""Digits fine-tuning environments and the hand-written baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reasonlab.config import ConfigError
from reasonlab.optim.baselines import BASELINES, Lamb, NormalizedSGD, schedule, search_grid
from reasonlab.optim.envs import DigitsEnv, Environment, EnvSpec, make_env
from reasonlab.optim.inner import OptSpec, Task, run_inner


@pytest.fixture(scope="module")
def env():
    return make_env(EnvSpec("digits", {"batch_size": 64}))


def test_digits_environment_protocol_and_splits(env):
    assert isinstance(env, Environment)
    assert env.x_train.shape[1] == 64 and env.x_train.max() <= 1.0
    assert len(env.y_train) + len(env.y_test) == 896  # digits 5..9 in load_digits
    assert set(env.y_train.tolist()) == set(range(5))
    model = env.make_model(3)
    assert len(list(model.parameters())) == 6
    # deterministic per seed, different across seeds
    same = env.make_model(3)
    other = env.make_model(4)
    for a, b, c in zip(model.parameters(), same.parameters(), other.parameters()):
        assert torch.equal(a, b) and not torch.equal(a, c)
    # a fresh head on a pretrained body: near chance before fine-tuning
    assert env.test_accuracy(model) < 0.5
    b1, b2 = next(env.batches(7)), next(env.batches(7))
    assert torch.equal(b1[0], b2[0]) and b1[0].shape == (64, 64)


def test_pretrained_body_has_learned_the_pretraining_classes(env):
    body = env.make_model(0).body
    feats = body(env.x_pre).detach().numpy()
    from sklearn.linear_model import LogisticRegression

    acc = LogisticRegression(max_iter=500).fit(feats, env.y_pre.numpy()).score(
        feats, env.y_pre.numpy())
    assert acc > 0.97


def test_variants_change_the_data():
    base = make_env(EnvSpec("digits", {}))
    shift = make_env(EnvSpec("digits", {"variant": "shift"}))
    noise = make_env(EnvSpec("digits", {"variant": "noise"}))
    split = make_env(EnvSpec("digits", {"variant": "split"}))
    img = shift.x_train.reshape(-1, 8, 8)
    assert torch.all(img[:, 0, :] == 0) and torch.all(img[:, :, 0] == 0)
    assert not torch.equal(noise.x_train, base.x_train)
    assert torch.equal(base.y_train, shift.y_train)  # same split, same labels
    from sklearn.datasets import load_digits

    n_odd = int(np.isin(load_digits().target, [1, 3, 5, 7, 9]).sum())
    assert len(split.y_train) + len(split.y_test) == n_odd
    assert split._cfg.classes == [1, 3, 5, 7, 9] and split._cfg.pretrain_classes == [0, 2, 4, 6, 8]
    alt = DigitsEnv(EnvSpec("digits", {"pretrain_recipe": "sgd_long"}).config())
    a, b = alt.make_model(0), base.make_model(0)
    assert not torch.equal(next(a.parameters()), next(b.parameters()))


def test_env_spec_validation():
    with pytest.raises(ConfigError, match="env.options.bogus"):
        EnvSpec("digits", {"bogus": 1})
    with pytest.raises(ConfigError, match="variant"):
        EnvSpec("digits", {"variant": "rotate"})
    with pytest.raises(ConfigError, match="env.name"):
        EnvSpec("cifar", {})


def test_inner_run_with_tuned_adam_learns(env):
    spec = EnvSpec("digits", {"batch_size": 64})
    r = run_inner(Task(spec, OptSpec("adam", {"lr": 0.02}), seed=0, steps=100, curve=True))
    assert not r["diverged"]
    assert r["losses"][0] > 1.0 and r["final_loss"] < 0.1
    assert r["test_acc"] > 0.93
    again = run_inner(Task(spec, OptSpec("adam", {"lr": 0.02}), seed=0, steps=100))
    assert again["mean_loss"] == r["mean_loss"]


def test_divergence_is_capped():
    spec = EnvSpec("digits", {"batch_size": 64})
    r = run_inner(Task(spec, OptSpec("sgd_momentum", {"lr": 50.0, "momentum": 0.99}), 0, 50))
    assert r["diverged"] and math.isnan(r["test_acc"])
    assert r["mean_loss"] <= 5.0 * math.log(5) * 1.5


def test_normalized_sgd_and_lamb_step_sizes():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(10, 10))
    w.grad = torch.randn(10, 10)
    w0 = w.detach().clone()
    NormalizedSGD([w], lr=0.1, momentum=0.0).step()
    assert float((w.detach() - w0).pow(2).mean().sqrt()) == pytest.approx(0.1, rel=1e-6)
    w1 = w.detach().clone()
    Lamb([w], lr=0.01).step()
    assert float((w.detach() - w1).norm()) == pytest.approx(0.01 * float(w1.norm()), rel=1e-5)


def test_schedules_and_search_grid():
    assert schedule("cosine", 100)(0) == 1.0 and schedule("cosine", 100)(100) == pytest.approx(0)
    assert schedule("linear", 10, 0.1)(5) == pytest.approx(0.55)
    assert schedule("exp", 10)(10) == pytest.approx(0.01)
    assert schedule("cosine", 10)(30) == pytest.approx(0.0)  # held past the horizon
    for name in BASELINES:
        grid = search_grid(name, 300)
        assert 0 < len(grid) <= 300
        lrs = sorted({g["lr"] for g in grid})
        assert len(lrs) >= 8
    assert len(search_grid("adam", 30)) <= 30  # 6 combos x 5 learning rates
    assert len(search_grid("nsgd_decay", 5)) == 5  # too small for the grid: defaults only


def test_per_seed_validation_partition():
    opts = {"val_fraction": 0.25}
    fixed = DigitsEnv(EnvSpec("digits", opts).config())
    per = DigitsEnv(EnvSpec("digits", {**opts, "val_split": "per_seed"}).config())
    assert torch.equal(per.x_test, fixed.x_test)  # the test split never moves
    rows = lambda x: {tuple(r.tolist()) for r in x}  # noqa: E731
    pool = rows(torch.cat([fixed.x_train, fixed.x_val]))
    parts = []
    for seed in (0, 1):
        xt, yt, xv, yv = per.split(seed)
        assert len(yv) == len(fixed.y_val) and len(yt) == len(fixed.y_train)
        assert not rows(xt) & rows(xv) and rows(xt) | rows(xv) == pool
        assert torch.equal(per.split(seed)[2], xv)  # deterministic in the seed
        parts.append(rows(xv))
        xb, _ = next(per.val_batches(seed))
        assert rows(xb) <= rows(xv)
    assert parts[0] != parts[1]
    for seed in (0, 3):  # "fixed" is one partition for every seed
        assert torch.equal(fixed.split(seed)[2], fixed.x_val)
    with pytest.raises(ConfigError, match="val_split"):
        EnvSpec("digits", {"val_split": "random"})
