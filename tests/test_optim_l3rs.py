"""The L3RS optimizer core: exactness against torch optimizers, state, meta-parameter files."""

from __future__ import annotations

import copy
import dataclasses
import io
import math

import pytest
import torch
from torch import nn

from reasonlab.config import ConfigError
from reasonlab.optim.baselines import NormalizedSGD
from reasonlab.optim.l3rs import (BETA_NAMES, L3RS, L3RSConfig, MetaModel, count_rows, kind_rows,
                                  time_basis)


def _net(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 4)).to(dtype)


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 6, generator=g, dtype=dtype), torch.randint(0, 4, (32,), generator=g)


def _train(net, opt, steps, dtype=torch.float64, pass_loss=True):
    x, y = _data(dtype)
    traj = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        if isinstance(opt, L3RS) and pass_loss:
            opt.step(loss=loss)
        else:
            opt.step()
        traj.append([p.detach().clone() for p in net.parameters()])
    return traj


def _max_diff(a, b):
    return max(float((x - y).abs().max()) for ta, tb in zip(a, b) for x, y in zip(ta, tb))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 2e-6)])
def test_one_hot_adam_mix_reproduces_torch_adam(dtype, tol):
    """All four directions configured, state features on, mix one-hot on Adam, λ = lr."""
    lr = 0.01
    cfg = L3RSConfig(normalize="none", base_lr=lr)
    meta = MetaModel.fixed(cfg, n_layers=4, mix={"adam": 1.0})
    a, b = _net(dtype), _net(dtype)
    ref = _train(a, torch.optim.Adam(a.parameters(), lr=lr), 12, dtype)
    opt = L3RS(b.parameters(), meta)
    got = _train(b, opt, 12, dtype)
    assert _max_diff(ref, got) < tol
    # the parameters really moved (a trivial pass would also have a zero difference)
    assert _max_diff(ref[:1], [[p.detach() for p in _net(dtype).parameters()]]) > 1e-3
    lam, mu = opt.last_coefficients
    assert torch.all(lam == lr) and torch.all(mu[:, 2] == 1.0) and mu.sum() == mu.shape[0]


def test_one_hot_adam_with_other_step_size_and_betas():
    cfg = L3RSConfig(directions=["adam"], normalize="none", base_lr=0.003, betas=[0.8, 0.99],
                     state_features=False)
    a, b = _net(), _net()
    ref = _train(a, torch.optim.Adam(a.parameters(), lr=0.003, betas=(0.8, 0.99)), 8)
    got = _train(b, L3RS(b.parameters(), MetaModel(cfg, 4)), 8)
    assert _max_diff(ref, got) < 1e-13


def test_one_hot_momentum_reproduces_sgd_momentum():
    cfg = L3RSConfig(normalize="none", base_lr=0.05, momentum=0.9)
    a, b = _net(), _net()
    ref = _train(a, torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.9), 10)
    got = _train(b, L3RS(b.parameters(), MetaModel.fixed(cfg, 4, mix={"momentum": 1})), 10)
    assert _max_diff(ref, got) < 1e-13


def test_normalized_sgd_direction_matches_baseline():
    """One-hot SGD with unit-RMS normalization equals NormalizedSGD without momentum."""
    cfg = L3RSConfig(normalize="rms", base_lr=0.02, eps=1e-8)
    a, b = _net(), _net()
    ref = _train(a, NormalizedSGD(a.parameters(), lr=0.02, momentum=0.0), 6)
    got = _train(b, L3RS(b.parameters(), MetaModel.fixed(cfg, 4, mix={"sgd": 1})), 6)
    assert _max_diff(ref, got) < 1e-12


def test_sign_direction_is_lion():
    cfg = L3RSConfig(normalize="none", base_lr=1e-3, lion_betas=[0.9, 0.99])
    net = _net()
    opt = L3RS(net.parameters(), MetaModel.fixed(cfg, 4, mix={"sign": 1}))
    x, y = _data()
    m = [torch.zeros_like(p) for p in net.parameters()]
    for _ in range(5):
        before = [p.detach().clone() for p in net.parameters()]
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        grads = [p.grad.clone() for p in net.parameters()]
        opt.step()
        for p, p0, g, mi in zip(net.parameters(), before, grads, m):
            expect = p0 - 1e-3 * torch.sign(0.9 * mi + 0.1 * g)
            assert torch.allclose(p.detach(), expect, atol=1e-15)
            mi.mul_(0.99).add_(0.01 * g)


def test_mix_is_normalized_and_update_size_is_lambda():
    """With RMS normalization, a uniform mix of identical directions moves each tensor by
    exactly λ in RMS; the zero meta-parameters give λ = base_lr and μ = 1/P."""
    cfg = L3RSConfig(directions=["sgd", "momentum"], normalize="rms", base_lr=0.01,
                     state_features=False)
    net = _net()
    opt = L3RS(net.parameters(), MetaModel(cfg, 4))
    before = [p.detach().clone() for p in net.parameters()]
    _train(net, opt, 1)  # first step: momentum buffer == gradient
    for p, p0 in zip(net.parameters(), before):
        rms = float((p.detach() - p0).pow(2).mean().sqrt())
        assert rms == pytest.approx(0.01, rel=1e-6)
    lam, mu = opt.last_coefficients
    assert torch.allclose(mu, torch.full_like(mu, 0.5)) and torch.allclose(lam, lam.new_full(
        lam.shape, 0.01))


def test_state_dict_round_trip_continues_identically():
    cfg = L3RSConfig()
    meta = MetaModel(cfg, 4, theta=torch.linspace(-0.3, 0.3, MetaModel(cfg, 4).size))
    a = _net()
    opt_a = L3RS(a.parameters(), meta)
    _train(a, opt_a, 5)
    b = copy.deepcopy(a)
    buf = io.BytesIO()
    torch.save(opt_a.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    opt_b = L3RS(b.parameters(), MetaModel(cfg, 4))  # other meta: restored from the state
    opt_b.load_state_dict(sd)
    ta, tb = _train(a, opt_a, 5), _train(b, opt_b, 5)
    assert _max_diff(ta, tb) == 0.0
    assert torch.equal(opt_b.meta.theta, meta.theta)
    assert opt_b.state_dict()["l3rs"]["global"]["step"] == 10


def test_meta_file_round_trip(tmp_path):
    cfg = L3RSConfig(directions=["sgd", "adam", "sign"], time_features="both")
    m = MetaModel(cfg, 6)
    m = m.with_theta(torch.randn(m.size, generator=torch.Generator().manual_seed(0)))
    path = tmp_path / "meta.safetensors"
    m.save(path, extra={"note": "x"})
    back = MetaModel.load(path)
    assert torch.equal(back.theta, m.theta)
    assert back.config == cfg and back.n_layers == 6
    assert path.stat().st_size < 8000
    (tmp_path / "other.safetensors").write_bytes(path.read_bytes()[:40])
    with pytest.raises(Exception):
        MetaModel.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        MetaModel.load(tmp_path / "missing.safetensors")


def test_layouts_of_the_ablations():
    full = MetaModel(L3RSConfig(), 6)  # L=6, K=4 time features, P=4, F=7
    assert full.layout == {"step_table": (6, 4), "step_state": (7,), "mix_table": (6, 4, 4),
                           "mix_state": (4, 7)}
    assert full.size == 24 + 7 + 96 + 28
    step_only = MetaModel(L3RSConfig(mix_mode="uniform", state_features=False), 6)
    assert step_only.layout == {"step_table": (6, 4)}
    mix_only = MetaModel(L3RSConfig(step_mode="constant", state_features=False), 6)
    assert mix_only.layout == {"log_step": (1,), "mix_table": (6, 4, 4)}
    single = MetaModel(L3RSConfig(directions=["adam"], state_features=False), 6)
    assert not single.learns_mix and single.size == 24
    lam, mu = step_only.coefficients(time_basis(step_only.config, 0))
    assert torch.allclose(mu, torch.full((6, 4), 0.25, dtype=torch.float64))


def test_time_features_extrapolate():
    cfg = L3RSConfig(time_features="absolute", time_scales=[10.0, 100.0])
    assert time_basis(cfg, 0).tolist() == [1.0, 1.0, 1.0]
    far = time_basis(cfg, 10**6)
    assert far.tolist() == pytest.approx([1.0, 0.0, 0.0])
    both = L3RSConfig(time_features="both", horizon=100)
    assert time_basis(both, 50).tolist()[-2:] == pytest.approx([0.5, 0.25])
    assert time_basis(both, 50, horizon=200).tolist()[-2:] == pytest.approx([0.25, 0.0625])


def test_tensors_map_to_layer_rows_by_depth():
    net = _net()  # 4 tensors on a 2-row meta model: rows 0, 0, 1, 1 by relative depth
    cfg = L3RSConfig(directions=["sgd"], normalize="none", state_features=False)
    meta = MetaModel(cfg, 2)
    meta.slices()["step_table"][:, 0] = torch.tensor([0.0, math.log(2.0)])
    opt = L3RS(net.parameters(), meta)
    _train(net, opt, 1)
    lam = opt.last_coefficients[0]
    assert lam.tolist() == pytest.approx([0.01, 0.01, 0.02, 0.02])  # round(i/3) -> 0, 0, 1, 1


def test_tensors_of_one_kind_share_a_row_at_every_depth():
    """``layer_rows: kind``: tensors whose names differ only in a layer index share a meta row
    (rows numbered in order of first appearance), whatever the depth of the model."""
    names = ["embed.weight", "layers.0.q.weight", "layers.0.norm.weight", "layers.1.q.weight",
             "layers.1.norm.weight", "layers.10.q.weight", "head.weight"]
    assert kind_rows(names) == [0, 1, 2, 1, 2, 1, 3]
    cfg = L3RSConfig(directions=["sgd"], normalize="none", state_features=False,
                     layer_rows="kind")
    torch.manual_seed(0)
    deep = nn.Sequential(*[nn.Linear(6, 6) for _ in range(3)], nn.Linear(6, 4)).double()
    assert count_rows(cfg, deep.named_parameters()) == 2  # "*.weight" and "*.bias"
    assert count_rows(L3RSConfig(), deep.named_parameters()) == 8
    meta = MetaModel(cfg, 2)
    meta.slices()["step_table"][:, 0] = torch.tensor([math.log(3.0), 0.0])
    opt = L3RS(deep.named_parameters(), meta)
    x, y = _data()
    before = [p.detach().clone() for p in deep.parameters()]
    loss = nn.functional.cross_entropy(deep(x), y)
    loss.backward()
    grads = [p.grad.clone() for p in deep.parameters()]
    opt.step(loss=float(loss.detach()))
    assert opt.last_coefficients[0].tolist() == pytest.approx([0.03, 0.01] * 4)
    for p, p0, g, lam in zip(deep.parameters(), before, grads, [0.03, 0.01] * 4):
        torch.testing.assert_close(p.detach(), p0 - lam * g)
    with pytest.raises(ValueError, match="named_parameters"):
        L3RS(deep.parameters(), meta)
    with pytest.raises(ValueError, match="4 tensor kinds"):  # a.weight, a.bias, b.weight, b.bias
        L3RS(nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)}).named_parameters(), meta)
    with pytest.raises(ConfigError, match="layer_rows"):
        L3RSConfig(layer_rows="depth")


def test_shared_row_is_added_to_every_layers_row(monkeypatch, tmp_path):
    """``shared_row``: λ and μ come from each layer's row plus one shared row (a
    reparameterization: the same coefficients as a table holding the sums), on every path."""
    import reasonlab.optim.l3rs as l3rs_mod

    cfg = L3RSConfig(directions=["sgd", "adam"], shared_row=True)
    plain = L3RSConfig(directions=["sgd", "adam"])
    meta, ref = MetaModel(cfg, 4), MetaModel(plain, 4)
    assert meta.size == ref.size + cfg.n_time * 3  # step_shared [K] + mix_shared [2, K]
    g = torch.Generator().manual_seed(3)
    for name, view in meta.slices().items():
        view.copy_(0.3 * torch.randn(view.shape, generator=g, dtype=torch.float64))
    s, r = meta.slices(), ref.slices()
    for name in r:
        r[name].copy_(s[name])
    r["step_table"] += s["step_shared"]
    r["mix_table"] += s["mix_shared"]
    phi, psi = time_basis(cfg, 5), torch.rand(4, cfg.n_state, dtype=torch.float64)
    for a, b in zip(meta.coefficients(phi, psi), ref.coefficients(phi, psi)):
        torch.testing.assert_close(a, b)
    s["step_shared"][0] += 1.0  # an in-place write is seen
    lam, _ = meta.coefficients(phi, psi)
    torch.testing.assert_close(lam, ref.coefficients(phi, psi)[0] * math.e)
    s["step_shared"][0] -= 1.0
    for fused in (False, True):
        monkeypatch.setattr(l3rs_mod, "_FUSED", fused)
        a, b = _net(), _net()
        _train(a, L3RS(a.parameters(), meta), 4)
        _train(b, L3RS(b.parameters(), ref), 4)
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    meta.save(tmp_path / "meta.safetensors")
    torch.testing.assert_close(MetaModel.load(tmp_path / "meta.safetensors").theta, meta.theta)


def test_parameters_without_gradients_are_left_alone():
    net = _net()
    frozen = list(net.parameters())[0]
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    opt = L3RS(net.parameters(), MetaModel(L3RSConfig(), 4))
    _train(net, opt, 3)
    assert torch.equal(frozen, before)
    frozen.requires_grad_(True)  # the flat buffers are rebuilt for the new set of tensors
    _train(net, opt, 2)
    assert not torch.equal(frozen, before)
    assert "exp_avg" in opt.state[frozen]


def test_config_validation():
    with pytest.raises(ConfigError, match="directions"):
        L3RSConfig(directions=["adam", "nope"])
    with pytest.raises(ConfigError, match="base_lr"):
        L3RSConfig(base_lr=0.0)
    with pytest.raises(ConfigError, match="time_features"):
        L3RSConfig(time_features="relative")
    with pytest.raises(ValueError, match="entries"):
        MetaModel(L3RSConfig(), 6, theta=[0.0, 1.0])


@pytest.mark.parametrize("dtype,numpy_max", [(torch.float32, 1 << 16), (torch.float64, 1 << 16),
                                             (torch.bfloat16, 1 << 16), (torch.float32, 0)])
def test_segment_norms_equal_each_tensors_norm(dtype, numpy_max, monkeypatch):
    """The per-tensor norms of the flat buffers (NumPy segment sums on the CPU, a foreach norm
    otherwise) are each tensor's own L2 norm."""
    import reasonlab.optim.l3rs as l3rs_mod

    monkeypatch.setattr(l3rs_mod, "_NUMPY_NORM_MAX", numpy_max)  # 0: the foreach path
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 3)).to(dtype)
    cfg = L3RSConfig(directions=["sgd", "adam"], normalize="rms", state_features=True)
    opt = L3RS(model.parameters(), MetaModel(cfg, 4))
    model(torch.randn(2, 5, dtype=dtype)).sum().backward()
    opt.step(loss=1.0)
    flat = opt._flat["grad"]
    got = opt._segment_norms(torch.stack([flat, 2 * flat]))
    want = torch.stack([p.grad.double().norm() for p in model.parameters()]).numpy()
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    assert got.shape == (2, 4)
    assert got[0] == pytest.approx(want, rel=tol)
    assert got[1] == pytest.approx(2 * want, rel=tol)


def test_normalized_adam_moves_each_tensor_by_lambda_after_bias_correction():
    """Unit-RMS normalization applies to the bias-corrected Adam direction: with a one-hot Adam
    mix every step moves each tensor by exactly λ in RMS, also after the first step (where the
    1/(1−β1^t) correction is not 1)."""
    cfg = L3RSConfig(directions=["adam", "sign"], normalize="rms", base_lr=0.01,
                     state_features=False)
    net = _net()
    opt = L3RS(net.parameters(), MetaModel.fixed(cfg, 4, mix={"adam": 1.0}))
    for _ in range(4):
        before = [p.detach().clone() for p in net.parameters()]
        _train(net, opt, 1)
        for p, p0 in zip(net.parameters(), before):
            rms = float((p.detach() - p0).pow(2).mean().sqrt())
            assert rms == pytest.approx(0.01, rel=1e-6)


@pytest.mark.parametrize("directions", [["sgd", "momentum", "adam", "sign"], ["adam", "rms"]])
def test_small_model_numpy_path_equals_the_torch_path(directions, monkeypatch):
    """The CPU fast path (NumPy norms, a matrix product per tensor for the update) and the
    general path of GPUs and other dtypes (foreach norms, per-element coefficients) take the
    same steps with a learned, non-trivial mix and state features on."""
    import numpy as np

    import reasonlab.optim.l3rs as l3rs_mod

    cfg = L3RSConfig(directions=directions, normalize="rms", base_lr=0.01)
    theta = np.random.default_rng(3).normal(0, 0.3, MetaModel(cfg, 4).size)
    trajs = []
    for numpy_max in (1 << 16, 0):
        monkeypatch.setattr(l3rs_mod, "_NUMPY_NORM_MAX", numpy_max)
        monkeypatch.setattr(l3rs_mod, "_NUMPY_UPDATE", numpy_max > 0)
        net = _net()
        opt = L3RS(net.parameters(), MetaModel(cfg, 4, theta))
        trajs.append(_train(net, opt, 8))
        assert (opt._np_rows is not None) == (numpy_max > 0)
    assert _max_diff(*trajs) < 1e-12
    assert _max_diff(trajs[0][:1], [[p.detach() for p in _net().parameters()]]) > 1e-3


_PATH_CONFIGS = {
    "four_directions": dict(directions=["sgd", "momentum", "adam", "sign"]),
    "adam_rms": dict(directions=["adam", "rms"]),
    "constant_step_uniform_mix": dict(step_mode="constant", mix_mode="uniform"),
    "weight_rms_no_state": dict(step_scale="weight_rms", state_features=False),
    "weight_rms_raw": dict(step_scale="weight_rms", normalize="none", base_lr=0.1),
}


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("name", list(_PATH_CONFIGS))
def test_fused_kernels_take_the_numpy_paths_steps(name, dtype, tol, monkeypatch):
    """The fused CPU kernels (directions and norms in one pass, the coefficients, the update)
    take the same steps as the NumPy path and the general torch path, for learned mixes and
    step sizes, with a frozen tensor (meta-model rows by relative depth)."""
    pytest.importorskip("numba")
    import numpy as np

    import reasonlab.optim.l3rs as l3rs_mod

    cfg = L3RSConfig(**{"base_lr": 0.01, **_PATH_CONFIGS[name]})
    theta = np.random.default_rng(5).normal(0, 0.3, MetaModel(cfg, 3).size)
    trajs, lams = [], []
    for fused, numpy_update in ((True, True), (False, True), (False, False)):
        monkeypatch.setattr(l3rs_mod, "_FUSED", fused)
        monkeypatch.setattr(l3rs_mod, "_NUMPY_UPDATE", numpy_update)
        net = _net(dtype)
        net[0].bias.requires_grad_(False)
        opt = L3RS(net.parameters(), MetaModel(cfg, 3, theta))
        trajs.append(_train(net, opt, 8, dtype))
        lams.append(opt.last_coefficients)
        assert opt._fused == fused
    for other, (lam, mu) in zip(trajs[1:], lams[1:]):
        assert _max_diff(trajs[0], other) < tol
        assert torch.allclose(lams[0][0], lam, rtol=1e-9) and torch.allclose(lams[0][1], mu)
    assert _max_diff(trajs[0][-1:], [[p.detach() for p in _net(dtype).parameters()]]) > 1e-3


def test_fused_path_keeps_one_hot_mixes_exact(monkeypatch):
    """A fixed one-hot mix on the fused path: unused directions get exactly zero weight, so the
    step is normalized Adam alone (each tensor moves by λ in RMS)."""
    pytest.importorskip("numba")
    cfg = L3RSConfig(directions=["sgd", "adam", "sign"], normalize="rms", base_lr=0.01)
    net = _net(torch.float32)
    opt = L3RS(net.parameters(), MetaModel.fixed(cfg, 4, mix={"adam": 1.0}))
    _train(net, opt, 2, torch.float32)
    assert opt._fused
    before = [p.detach().clone() for p in net.parameters()]
    _train(net, opt, 1, torch.float32)
    for p, p0 in zip(net.parameters(), before):
        assert float((p.detach() - p0).pow(2).mean().sqrt()) == pytest.approx(0.01, rel=1e-4)


@pytest.mark.parametrize("fused", [True, False])
def test_weight_rms_step_moves_each_tensor_by_lambda_times_its_weight_rms(fused, monkeypatch):
    """``step_scale: weight_rms``: with a one-hot normalized Adam mix each tensor moves by
    base_lr × its weight RMS (a tensor of zeros by base_lr, as in absolute mode)."""
    import reasonlab.optim.l3rs as l3rs_mod

    monkeypatch.setattr(l3rs_mod, "_FUSED", fused)
    cfg = L3RSConfig(directions=["adam", "sgd"], normalize="rms", base_lr=0.02,
                     step_scale="weight_rms")
    net = _net()
    with torch.no_grad():
        net[2].bias.zero_()
    opt = L3RS(net.parameters(), MetaModel.fixed(cfg, 4, mix={"adam": 1.0}))
    for _ in range(3):
        before = [p.detach().clone() for p in net.parameters()]
        _train(net, opt, 1)
        for p, p0 in zip(net.parameters(), before):
            w_rms = float(p0.pow(2).mean().sqrt())
            moved = float((p.detach() - p0).pow(2).mean().sqrt())
            assert moved == pytest.approx(0.02 * (w_rms if w_rms > 0 else 1.0), rel=1e-6)
    with pytest.raises(ConfigError, match="step_scale"):
        L3RSConfig(step_scale="relative")


def _logit(b):
    return math.log(b / (1 - b))


def test_learned_betas_shift_the_directions_decays():
    """``learn_betas``: one-hot Adam / heavy-ball with shifted decay logits is torch's Adam / SGD
    with those decays; zero shifts change nothing."""
    cfg = L3RSConfig(normalize="none", base_lr=0.003, learn_betas=True)
    meta = MetaModel.fixed(cfg, 4, mix={"adam": 1.0})
    s = meta.slices()["beta_logits"]
    s[1] = _logit(0.8) - _logit(0.9)
    s[2] = _logit(0.99) - _logit(0.999)
    eff = meta.effective_config()
    assert eff.betas == pytest.approx([0.8, 0.99]) and eff.momentum == cfg.momentum
    assert cfg.betas == [0.9, 0.999]  # the config itself is left alone
    a, b = _net(), _net()
    ref = _train(a, torch.optim.Adam(a.parameters(), lr=0.003, betas=(0.8, 0.99)), 8)
    assert _max_diff(ref, _train(b, L3RS(b.parameters(), meta), 8)) < 1e-13
    c = _net()  # unshifted decays: a different trajectory
    assert _max_diff(ref, _train(c, torch.optim.Adam(c.parameters(), lr=0.003), 8)) > 1e-6

    mom = MetaModel.fixed(dataclasses.replace(cfg, base_lr=0.05), 4, mix={"momentum": 1})
    mom.slices()["beta_logits"][0] = _logit(0.5) - _logit(0.9)
    a, b = _net(), _net()
    ref = _train(a, torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.5), 10)
    assert _max_diff(ref, _train(b, L3RS(b.parameters(), mom), 10)) < 1e-13

    plain = L3RSConfig()  # zero shifts: the same steps as without learned decays
    th = torch.linspace(-0.3, 0.3, MetaModel(plain, 4).size)
    learned = MetaModel(dataclasses.replace(plain, learn_betas=True), 4,
                        theta=torch.cat([th, torch.zeros(len(BETA_NAMES), dtype=th.dtype)]))
    a, b = _net(), _net()
    ta = _train(a, L3RS(a.parameters(), MetaModel(plain, 4, theta=th)), 6)
    assert _max_diff(ta, _train(b, L3RS(b.parameters(), learned), 6)) == 0.0


def test_learned_betas_survive_state_dict_and_meta_file(tmp_path):
    cfg = L3RSConfig(learn_betas=True)
    meta = MetaModel(cfg, 4, theta=torch.linspace(-0.5, 0.5, MetaModel(cfg, 4).size))
    a = _net()
    opt_a = L3RS(a.parameters(), meta)
    _train(a, opt_a, 4)
    b = copy.deepcopy(a)
    sd = copy.deepcopy(opt_a.state_dict())  # the live state holds views of opt_a's buffers
    assert sd["l3rs"]["config"]["betas"] == cfg.betas  # the base config: shifts applied once
    opt_b = L3RS(b.parameters(), MetaModel(cfg, 4))
    opt_b.load_state_dict(sd)
    assert opt_b.config == opt_a.config != cfg
    assert _max_diff(_train(a, opt_a, 4), _train(b, opt_b, 4)) == 0.0
    meta.save(tmp_path / "m.safetensors")
    back = MetaModel.load(tmp_path / "m.safetensors")
    assert back.effective_config() == meta.effective_config()
    assert MetaModel(L3RSConfig(), 4).size + len(BETA_NAMES) == meta.size
    scaled = MetaModel(dataclasses.replace(cfg, beta_scale=4.0), 4, theta=meta.theta / 4.0)
    assert scaled.effective_config().betas == pytest.approx(meta.effective_config().betas)
    assert scaled.effective_config().betas != meta.with_theta(meta.theta / 4).effective_config().betas
