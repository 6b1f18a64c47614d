"""Fused CPU kernels for the L3RS step (compiled with numba when it is installed).

On a small model the optimizer step is bound by the number of operations, not by the bytes
they touch: each torch or NumPy call costs microseconds of dispatch whatever its size. These
three kernels do the step's work in three calls:

* :func:`directions_and_norms`: every base optimizer's state update and direction (as in
  :meth:`reasonlab.optim.l3rs.L3RS._directions`), and the per-tensor squared norms of every row
  of the direction buffer and of the weights, in one pass over the flat buffers;
* :func:`coefficients`: the state features, λ, μ and the update's coefficients (as the step's
  NumPy path computes them);
* :func:`mix_update`: the update ``u = Σ_k c_{l,k} · row_k`` with one coefficient per tensor
  and row.

The arithmetic is the torch path's, in the buffers' dtype (the scalars are cast to it); norms
accumulate in float64. Without numba, :data:`AVAILABLE` is False and L3RS takes its NumPy/torch
path (the tests hold both to the same steps).
"""

from __future__ import annotations

import numpy as np

try:  # numba is optional: the optimizer works without it, more slowly on small models
    import numba
except ImportError:  # pragma: no cover - exercised where numba is missing
    numba = None

AVAILABLE = numba is not None


def _directions_and_norms(rows, mom_row, adam_row, sign_row, rms_row, m, v, lm, vr, w,
                          starts, ends, sq, mu, om_b1, b2, om_b2, eps_adam, om_l1, om_l2, rb,
                          om_rb, rms_bc, eps):  # pragma: no cover - compiled
    """Row 0 of ``rows`` is the gradient. ``*_row`` is the row a direction writes (−1: not
    used this step; the momentum row is its own state). ``m, v`` (Adam), ``lm`` (Lion) and
    ``vr`` (RMS) are states, empty when the direction is not configured; ``om_x`` is 1 − x.
    ``sq[k, s]`` gets Σ row_k² over tensor s (``k = n_rows``: the weights ``w``, when given)."""
    n_rows = rows.shape[0]
    has_adam, has_sign, has_rms = m.shape[0] > 0, lm.shape[0] > 0, vr.shape[0] > 0
    has_w = w.shape[0] > 0
    for s in range(starts.shape[0]):
        acc = np.zeros(n_rows + 1)
        for i in range(starts[s], ends[s]):
            g = rows[0, i]
            if mom_row >= 0:
                rows[mom_row, i] = rows[mom_row, i] * mu + g
            if has_adam:
                mi = m[i] + om_b1 * (g - m[i])
                vi = v[i] * b2 + om_b2 * (g * g)
                m[i] = mi
                v[i] = vi
                if adam_row >= 0:
                    rows[adam_row, i] = mi / (np.sqrt(vi) + eps_adam)
            if has_sign:
                li = lm[i]
                if sign_row >= 0:
                    rows[sign_row, i] = np.sign(li + om_l1 * (g - li))
                lm[i] = li + om_l2 * (g - li)
            if has_rms:
                vi = vr[i] * rb + om_rb * (g * g)
                vr[i] = vi
                if rms_row >= 0:
                    rows[rms_row, i] = g / (np.sqrt(vi / rms_bc) + eps)
            for k in range(n_rows):
                x = np.float64(rows[k, i])
                acc[k] += x * x
            if has_w:
                x = np.float64(w[i])
                acc[n_rows] += x * x
        for k in range(n_rows + 1):
            sq[k, s] = acc[k]


def _mix_update(coef, rows, starts, ends, out):  # pragma: no cover - compiled
    """``out[i] = Σ_k coef[s, k] · rows[k, i]`` for i in tensor s."""
    n_rows = rows.shape[0]
    for s in range(starts.shape[0]):
        c = coef[s]
        for i in range(starts[s], ends[s]):
            a = c[0] * rows[0, i]
            for k in range(1, n_rows):
                a += c[k] * rows[k, i]
            out[i] = a


def _coefficients(gns, wns, f, decays, ratios, clip, loss_f, rows_idx, phi, step_tab, step_state,
                  log_step, mix_tab, mix_state, base_lr, weight_rms, normalize, norms, dir_row,
                  scale, used, sqrt_numel, eps, lam, mu, coef):  # pragma: no cover - compiled
    """The rest of the step for tensors i = 0..n−1 (meta-model rows ``rows_idx``), as
    :meth:`L3RS._state_features`, :meth:`MetaModel.coefficients_np` and the step's coefficient
    arithmetic do it: grad-norm EMAs ``f`` updated in place; ψ; λ (``lam``) and μ (``mu``);
    ``coef[i, row]`` = λ·μ·scale of each direction's row (÷ its RMS when ``normalize``), 0 for
    unused directions and rows of no direction. ``ratios`` [3, 4]: the numerator and
    denominator columns of [EMA ×3, ‖g₀‖, ‖w₀‖, ‖w‖] and the scale of ψ's four log-ratios,
    each clipped to ±``clip``.
    Empty ``step_tab`` means the constant ``log_step``; empty ``mix_tab`` a uniform mix; empty
    ``decays`` no state features."""
    n, P = gns.shape[0], dir_row.shape[0]
    n_feat = 7 if decays.shape[0] > 0 else 0
    psi = np.zeros(7)
    lg = np.zeros(6)
    logits = np.zeros(P)
    coef[:, :] = 0.0
    for i in range(n):
        if n_feat:
            for k in range(3):
                f[i, k] = decays[k] * f[i, k] + (1 - decays[k]) * gns[i]
            for k in range(3):
                psi[k] = loss_f[k]
            for k in range(5):
                lg[k] = np.log(f[i, k])
            lg[5] = np.log(wns[i])
            for k in range(4):
                x = (lg[int(ratios[0, k])] - lg[int(ratios[1, k])]) * ratios[2, k]
                if not np.isfinite(x):
                    x = 0.0
                psi[3 + k] = min(max(x, -clip), clip)
        r = rows_idx[i]
        if step_tab.shape[0] > 0:
            z = 0.0
            for k in range(phi.shape[0]):
                z += step_tab[r, k] * phi[k]
            for k in range(n_feat):
                z += psi[k] * step_state[k]
        else:
            z = log_step
        li = base_lr * np.exp(z)
        lam[i] = li
        if mix_tab.shape[0] > 0:
            top = -np.inf
            for p in range(P):
                a = 0.0
                for k in range(phi.shape[0]):
                    a += mix_tab[r, p, k] * phi[k]
                for k in range(n_feat):
                    a += psi[k] * mix_state[p, k]
                logits[p] = a
                top = max(top, a)
            tot = 0.0
            for p in range(P):
                logits[p] = np.exp(logits[p] - top)
                tot += logits[p]
            for p in range(P):
                mu[i, p] = logits[p] / tot
        else:
            for p in range(P):
                mu[i, p] = 1.0 / P
        step = li
        if weight_rms:
            w = wns[i] / sqrt_numel[i]
            if w > 0:
                step = li * w
                lam[i] = step
        for p in range(P):
            if not used[p]:
                continue
            c = mu[i, p] * scale[p] * step
            if normalize:
                c = c / (norms[dir_row[p], i] * scale[p] / sqrt_numel[i] + eps)
            coef[i, dir_row[p]] = c


if AVAILABLE:
    _jit = numba.njit(cache=True, nogil=True, error_model="numpy")
    directions_and_norms = _jit(_directions_and_norms)
    mix_update = _jit(_mix_update)
    coefficients = _jit(_coefficients)
else:  # pragma: no cover
    directions_and_norms = mix_update = coefficients = None
