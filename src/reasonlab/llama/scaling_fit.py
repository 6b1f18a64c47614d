"""IsoFLOP scaling-law fits (arXiv:2407.21783 §3.2.1): the pure numbers, no training.

For each compute budget C, models of several sizes N trained on D = C / (6·N) tokens give a
parabola of validation loss against log10 N whose minimum is the compute-optimal size N*(C); a
least-squares line through (log10 C, log10 N*) gives N*(C) = A·C^α with its R². Because
C = 6·N·D, the optimal token count follows D*(C) = C / (6·N*(C)) ∝ C^(1−α) (the paper reports
this exponent for tokens: ≈ 0.53).

:func:`fit_parabola`, :func:`fit_isoflop`, :func:`fit_power_law` and :func:`fit_scaling` take
plain numbers; :func:`plot_isoflops` draws the two panels. The sweep that trains the points is
:mod:`reasonlab.llama.scaling`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)


def flops(n_params: float, tokens: float) -> float:
    """Training compute C ≈ 6·N·D."""
    return 6.0 * n_params * tokens


def tokens_for_budget(budget: float, n_params: float) -> float:
    """D = C / (6·N)."""
    return budget / (6.0 * n_params)


def r_squared(y: np.ndarray, y_hat: np.ndarray) -> float:
    y = np.asarray(y, dtype=float)
    ss_res = float(np.sum((y - y_hat) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)


@dataclass
class Parabola:
    """loss ≈ a·x² + b·x + c with x = log10 N."""

    a: float
    b: float
    c: float
    r2: float

    @property
    def convex(self) -> bool:
        return self.a > 0

    @property
    def x_min(self) -> float:
        if not self.convex:
            raise ValueError("the parabola opens downwards (a <= 0): no minimum")
        return -self.b / (2 * self.a)

    @property
    def y_min(self) -> float:
        x = self.x_min
        return self.a * x * x + self.b * x + self.c

    def __call__(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.a * np.asarray(x) ** 2 + self.b * np.asarray(x) + self.c


def fit_parabola(log_n: Sequence[float], loss: Sequence[float]) -> Parabola:
    """Least-squares parabola of ``loss`` against ``log_n`` (at least 3 points)."""
    x = np.asarray(log_n, dtype=float)
    y = np.asarray(loss, dtype=float)
    if x.shape != y.shape or x.size < 3:
        raise ValueError(f"a parabola needs at least 3 (log N, loss) points, got {x.size}")
    if not np.all(np.isfinite(y)):
        raise ValueError("losses must be finite")
    a, b, c = np.polyfit(x, y, 2)
    return Parabola(float(a), float(b), float(c), r_squared(y, np.polyval([a, b, c], x)))


@dataclass
class IsoFLOPFit:
    """One budget's curve: the parabola, its minimum N* and whether it lies inside the sizes."""

    budget: float
    sizes: list[float]
    losses: list[float]
    parabola: Parabola
    n_opt: float
    loss_opt: float
    interior: bool  # the minimum lies within [min size, max size]

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "sizes": self.sizes, "losses": self.losses,
                "parabola": {"a": self.parabola.a, "b": self.parabola.b, "c": self.parabola.c,
                             "r2": self.parabola.r2},
                "n_opt": self.n_opt, "loss_opt": self.loss_opt, "interior": self.interior,
                "tokens_opt": tokens_for_budget(self.budget, self.n_opt)}


def fit_isoflop(budget: float, sizes: Sequence[float], losses: Sequence[float]) -> IsoFLOPFit:
    """Fit the IsoFLOP parabola of one budget; N* = 10^(x_min). Raises if it is not convex."""
    order = np.argsort(sizes)
    n = np.asarray(sizes, dtype=float)[order]
    y = np.asarray(losses, dtype=float)[order]
    if np.any(n <= 0):
        raise ValueError("sizes must be positive")
    p = fit_parabola(np.log10(n), y)
    if not p.convex:
        raise ValueError(f"budget {budget:.3g}: the loss-vs-log N curve is not convex "
                         f"(a = {p.a:.3g}); widen the sizes around the optimum")
    x = p.x_min
    interior = bool(math.log10(n[0]) <= x <= math.log10(n[-1]))
    return IsoFLOPFit(float(budget), n.tolist(), y.tolist(), p, float(10 ** x), float(p.y_min), interior)


@dataclass
class PowerLaw:
    """N*(C) = A · C^α, fitted by least squares on log10 N* = log10 A + α·log10 C."""

    A: float
    alpha: float
    r2: float

    def __call__(self, budget: float | np.ndarray) -> float | np.ndarray:
        return self.A * np.asarray(budget, dtype=float) ** self.alpha

    def tokens(self, budget: float) -> float:
        """Compute-optimal tokens D*(C) = C / (6·N*(C))."""
        return tokens_for_budget(budget, float(self(budget)))


def fit_power_law(budgets: Sequence[float], n_opt: Sequence[float]) -> PowerLaw:
    """Least squares in log space (at least 2 points; R² needs 3 to mean anything)."""
    c = np.asarray(budgets, dtype=float)
    n = np.asarray(n_opt, dtype=float)
    if c.shape != n.shape or c.size < 2:
        raise ValueError(f"a power law needs at least 2 (C, N*) points, got {c.size}")
    if np.any(c <= 0) or np.any(n <= 0):
        raise ValueError("budgets and optimal sizes must be positive")
    x, y = np.log10(c), np.log10(n)
    alpha, log_a = np.polyfit(x, y, 1)
    return PowerLaw(float(10 ** log_a), float(alpha), r_squared(y, np.polyval([alpha, log_a], x)))


def fit_scaling(points: Sequence[dict[str, float]], *, strict: bool = True,
                require_interior: bool = False
                ) -> tuple[list[IsoFLOPFit], PowerLaw, list[dict[str, Any]]]:
    """From records ``{"budget", "n_params", "val_loss"}``: the per-budget fits, the power law,
    and the budgets left out. With ``strict=False`` a budget with fewer than 3 sizes or a
    non-convex curve is left out (with the reason) instead of raising. With
    ``require_interior`` a budget whose minimum lies outside its sizes (an extrapolated N*) is
    left out of the power law too (its fit is still returned)."""
    by_budget: dict[float, list[tuple[float, float]]] = {}
    for p in points:
        by_budget.setdefault(float(p["budget"]), []).append((float(p["n_params"]), float(p["val_loss"])))
    fits, excluded = [], []
    for b in sorted(by_budget):
        pts = by_budget[b]
        try:
            fits.append(fit_isoflop(b, [s for s, _ in pts], [v for _, v in pts]))
        except ValueError as e:
            if strict:
                raise
            log.warning("budget %.3g left out of the fit: %s", b, e)
            excluded.append({"budget": b, "reason": str(e)})
    used = fits
    if require_interior:
        used = [f for f in fits if f.interior]
        for f in fits:
            if not f.interior:
                log.warning("budget %.3g left out of the power law: its minimum N* = %.3g lies "
                            "outside the sizes %.3g-%.3g", f.budget, f.n_opt, min(f.sizes), max(f.sizes))
                excluded.append({"budget": f.budget, "reason": f"minimum N* = {f.n_opt:.4g} lies "
                                 f"outside the sizes [{min(f.sizes):.4g}, {max(f.sizes):.4g}]"})
    if len(used) < 2:
        raise ValueError(f"only {len(used)} budget(s) give a usable minimum ({excluded}); add sizes "
                         "around the optimum or change the budgets")
    law = fit_power_law([f.budget for f in used], [f.n_opt for f in used])
    return fits, law, excluded


def plot_isoflops(fits: Sequence[IsoFLOPFit], law: PowerLaw, path: str | Path,
                  predict_budget: float | None = None, param_label: str = "non-embedding") -> Path:
    """Two panels: the IsoFLOP curves with their parabolas and minima; N*(C) with the fit."""
    import matplotlib.ticker

    from reasonlab.plots import pyplot, save_figure

    plt = pyplot()

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.cm.viridis(np.linspace(0.1, 0.85, max(1, len(fits))))
    for f, col in zip(fits, colors):
        xs = np.linspace(math.log10(min(f.sizes)) - 0.15, math.log10(max(f.sizes)) + 0.15, 100)
        ax1.plot(f.sizes, f.losses, "o", color=col, label=f"C = {f.budget:.2g}")
        ax1.plot(10 ** xs, f.parabola(xs), "-", color=col, alpha=0.7)
        ax1.plot([f.n_opt], [f.loss_opt], "*", color=col, ms=13, mec="k")
    ax1.set_xscale("log")
    ax1.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax1.set_xlabel(f"parameters N ({param_label})")
    ax1.set_ylabel("validation loss (nats/token)")
    ax1.set_title("IsoFLOP curves")
    ax1.legend(fontsize=8)
    cs = np.array([f.budget for f in fits])
    lo, hi = cs.min() / 2, (max(cs.max(), predict_budget or 0)) * 2
    grid = np.logspace(math.log10(lo), math.log10(hi), 50)
    inside = [f for f in fits if f.interior]
    outside = [f for f in fits if not f.interior]
    if inside:
        ax2.loglog([f.budget for f in inside], [f.n_opt for f in inside], "o", color="C0",
                   label="N*(C): minimum inside the sizes")
    if outside:
        ax2.loglog([f.budget for f in outside], [f.n_opt for f in outside], "o", mfc="none",
                   color="C0", label="N*(C): extrapolated minimum")
    ax2.loglog(grid, law(grid), "-", color="C1",
               label=f"N* = {law.A:.3g}·C^{law.alpha:.3f} (R² = {law.r2:.3f})")
    if predict_budget:
        ax2.loglog([predict_budget], [law(predict_budget)], "s", color="C3",
                   label=f"prediction at C = {predict_budget:.2g}: {float(law(predict_budget)):.3g}")
    ax2.set_xlabel("compute C (FLOPs, 6·N·D)")
    ax2.set_ylabel("compute-optimal N*")
    ax2.set_title("Compute-optimal model size")
    ax2.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)
