"""L3RS base directions on hand-chosen gradients, where a swapped or mistyped constant shows.

Five steps of a real loss give the same Lion signs whatever the two betas are; gradients chosen
by hand (a large one, then a small one of the other sign) tell β1 from β2 apart.
"""

from __future__ import annotations

import math

import pytest
import torch

from reasonlab.optim.l3rs import L3RS, L3RSConfig, MetaModel, _logratio, time_basis


def _run(cfg, mix, grads, loss=None):
    """One scalar-vector parameter stepped with the given gradients; the parameter after each step."""
    p = torch.nn.Parameter(torch.zeros(len(grads[0]), dtype=torch.float64))
    opt = L3RS([p], MetaModel.fixed(cfg, 1, mix=mix) if mix else MetaModel(cfg, 1))
    out = []
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step(loss=loss)
        out.append(p.detach().clone())
    return out, opt


def test_lion_betas_are_not_interchangeable():
    # β1 = 0.9 mixes the step's direction, β2 = 0.99 the momentum that is kept.
    cfg = L3RSConfig(directions=["sgd", "sign"], normalize="none", base_lr=1.0,
                     lion_betas=[0.9, 0.99], state_features=False)
    traj, opt = _run(cfg, {"sign": 1}, [[1.0], [-1.0]])
    # step 1: m = 0 → sign(0.1·1) = +1; m ← 0.01
    assert traj[0].tolist() == [-1.0]
    # step 2: sign(0.9·0.01 + 0.1·(−1)) = −1 (swapped betas: sign(0.99·0.1 − 0.01) = +1)
    assert traj[1].tolist() == [0.0]
    # the kept momentum: 0.99·0.01 + 0.01·(−1)
    m = opt.state[opt.param_groups[0]["params"][0]]["lion_avg"].tolist()[0]
    assert m == pytest.approx(0.99 * 0.01 - 0.01, abs=1e-15)


def test_lion_direction_matches_its_definition_over_chosen_gradients():
    cfg = L3RSConfig(directions=["sign", "adam"], normalize="none", base_lr=0.5,
                     lion_betas=[0.8, 0.95], state_features=False)
    grads = [[2.0, -1.0], [-0.3, 0.05], [0.1, 0.2], [-4.0, 0.0]]
    traj, _ = _run(cfg, {"sign": 1}, grads)
    m, x = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for g, got in zip(grads, traj):
        g = torch.tensor(g, dtype=torch.float64)
        x = x - 0.5 * torch.sign(0.8 * m + 0.2 * g)
        m = 0.95 * m + 0.05 * g
        assert torch.equal(got, x)


def test_rms_direction_is_bias_corrected_rmsprop():
    cfg = L3RSConfig(directions=["rms", "sgd"], normalize="none", base_lr=0.1, rms_beta=0.9,
                     eps=1e-8, state_features=False)
    grads = [[3.0, -1.0], [1.0, 2.0], [-2.0, 0.5]]
    traj, _ = _run(cfg, {"rms": 1}, grads)
    v, x = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for t, (g, got) in enumerate(zip(grads, traj)):
        g = torch.tensor(g, dtype=torch.float64)
        v = 0.9 * v + 0.1 * g * g
        x = x - 0.1 * g / ((v / (1 - 0.9 ** (t + 1))).sqrt() + 1e-8)
        torch.testing.assert_close(got, x, rtol=1e-12, atol=1e-12)
    # the first step is g / |g| exactly (bias correction undoes the 0.1)
    assert traj[0].tolist() == pytest.approx([-0.1, 0.1], abs=1e-9)


def test_rms_normalization_and_mix_weights_on_chosen_gradients():
    """Two directions mixed 3:1 with unit-RMS normalization: each direction is divided by its RMS
    before the λ·μ weighting."""
    cfg = L3RSConfig(directions=["sgd", "sign"], normalize="rms", base_lr=0.2, eps=0.0,
                     lion_betas=[0.9, 0.99], state_features=False)
    g = [3.0, -4.0]  # RMS of g: sqrt(12.5); sign direction RMS 1
    traj, opt = _run(cfg, {"sgd": 0.75, "sign": 0.25}, [g])
    rms = math.sqrt(12.5)
    expect = [-0.2 * (0.75 * 3.0 / rms + 0.25), -0.2 * (0.75 * -4.0 / rms - 0.25)]
    assert traj[0].tolist() == pytest.approx(expect, abs=1e-12)
    lam, mu = opt.last_coefficients
    assert lam.tolist() == pytest.approx([0.2]) and mu.tolist()[0] == pytest.approx([0.75, 0.25])


def test_step_size_and_mix_come_from_the_meta_parameters():
    cfg = L3RSConfig(directions=["sgd", "momentum"], normalize="none", base_lr=0.1,
                     time_features="absolute", time_scales=[2.0], state_features=False)
    meta = MetaModel(cfg, 1)
    s = meta.slices()
    s["step_table"][0] = torch.tensor([math.log(2.0), 1.0])  # z0 = log 2 + exp(−t/2)
    s["mix_table"][0, 1, 0] = math.log(3.0)  # logits [0, log 3] → μ = [1/4, 3/4]
    lam, mu = meta.coefficients(time_basis(cfg, 0))
    assert lam.tolist() == pytest.approx([0.1 * 2.0 * math.e])
    assert mu.tolist()[0] == pytest.approx([0.25, 0.75])
    lam4, _ = meta.coefficients(time_basis(cfg, 4))
    assert lam4.tolist() == pytest.approx([0.1 * 2.0 * math.exp(math.exp(-2.0))])
    assert time_basis(cfg, 4).tolist() == pytest.approx([1.0, math.exp(-2.0)])
    prog = L3RSConfig(time_features="both", time_scales=[5.0], horizon=10)
    assert time_basis(prog, 5).tolist() == pytest.approx([1.0, math.exp(-1.0), 0.5, 0.25])
    assert time_basis(prog, 5, horizon=20).tolist() == pytest.approx([1.0, math.exp(-1.0), 0.25, 0.0625])


def test_momentum_and_adam_directions_on_chosen_gradients():
    grads = [[1.0, -2.0], [0.5, 0.5], [-1.0, 3.0]]
    cfg = L3RSConfig(directions=["momentum", "adam"], normalize="none", base_lr=0.1,
                     momentum=0.5, betas=[0.8, 0.9], eps=1e-8, state_features=False)
    traj, _ = _run(cfg, {"momentum": 1}, grads)
    buf, x = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for g, got in zip(grads, traj):
        buf = 0.5 * buf + torch.tensor(g, dtype=torch.float64)
        x = x - 0.1 * buf
        torch.testing.assert_close(got, x, rtol=0, atol=1e-14)
    traj, _ = _run(cfg, {"adam": 1}, grads)
    m, v, x = (torch.zeros(2, dtype=torch.float64) for _ in range(3))
    for t, (g, got) in enumerate(zip(grads, traj)):
        g = torch.tensor(g, dtype=torch.float64)
        m = 0.8 * m + 0.2 * g
        v = 0.9 * v + 0.1 * g * g
        x = x - 0.1 * (m / (1 - 0.8 ** (t + 1))) / ((v / (1 - 0.9 ** (t + 1))).sqrt() + 1e-8)
        torch.testing.assert_close(got, x, rtol=0, atol=1e-13)


def test_state_features_from_loss_and_gradient_emas(monkeypatch):
    """ψ as the NumPy path computes it (the fused kernel's path is held to the same steps by
    test_optim_l3rs.py::test_fused_kernels_take_the_numpy_paths_steps)."""
    import reasonlab.optim.l3rs as l3rs_mod

    monkeypatch.setattr(l3rs_mod, "_FUSED", False)
    cfg = L3RSConfig(directions=["sgd"], normalize="none", base_lr=0.1, ema_decays=[0.5, 0.9, 0.99])
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = L3RS([p], MetaModel(cfg, 1))
    psis = []
    orig = opt.meta.coefficients_np  # the step's path (coefficients() wraps it for torch)

    def spy(phi, psi=None, rows=None):
        psis.append(psi.copy())
        return orig(phi, psi, rows)

    opt.meta.coefficients_np = spy
    for loss, gscale in ((4.0, 1.0), (2.0, 3.0)):
        p.grad = torch.full((4,), gscale, dtype=torch.float64)
        opt.step(loss=loss)
    assert psis[0].tolist() == [[0.0] * 7]  # first step: every EMA equals its start
    # after step 2: loss EMAs 0.5·4+0.5·2 = 3, 0.9·4+0.1·2 = 3.8, 0.99·4+0.01·2 = 3.98; start 4
    le = [3.0, 3.8, 3.98]
    gn = [2.0 * x for x in (1.0, 1.0, 1.0)]  # ‖g‖ = 2 at step 1, 6 at step 2
    ge = [0.5 * 2 + 0.5 * 6, 0.9 * 2 + 0.1 * 6, 0.99 * 2 + 0.01 * 6]
    w1 = math.sqrt(4 * 0.9 ** 2)  # weights after one SGD step of 0.1·1
    expect = [math.log(le[0] / le[1]), math.log(le[1] / le[2]), math.log(le[1] / 4.0),
              math.log(ge[0] / ge[1]), math.log(ge[1] / ge[2]), math.log(ge[1] / gn[0]),
              max(-3.0, min(3.0, 10 * math.log(w1 / 2.0)))]
    assert psis[1].tolist()[0] == pytest.approx(expect, abs=1e-12)


def test_logratio_clips_and_skips_missing_values():
    assert _logratio(math.e, 1.0) == pytest.approx(1.0)
    assert _logratio(1.0, math.e) == pytest.approx(-1.0)
    assert _logratio(100.0, 1.0) == 3.0 and _logratio(1.0, 100.0) == -3.0
    assert _logratio(2.0, 1.0, scale=10.0) == 3.0
    assert _logratio(1.0, None) == 0.0 and _logratio(0.0, 1.0) == 0.0 and _logratio(1.0, 0.0) == 0.0
    assert _logratio(float("inf"), 1.0) == 0.0 and _logratio(1.0, float("nan")) == 0.0
