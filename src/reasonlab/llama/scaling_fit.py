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


# --------------------------------------------------------------------------- intervals, forecast

def ci95(samples: Sequence[float]) -> list[float] | None:
    """The 2.5th and 97.5th percentiles of the finite ``samples`` (None when there are none)."""
    s = np.asarray([x for x in samples if x is not None and np.isfinite(x)], dtype=float)
    return [float(np.percentile(s, 2.5)), float(np.percentile(s, 97.5))] if s.size else None


def predict_power_law(law: PowerLaw, budgets: Sequence[float], values: Sequence[float],
                      at: float) -> tuple[float, float, int]:
    """The fit's value at ``at`` with the standard error of a new observation there, in log10
    units (``s·sqrt(1 + 1/n + (x − x̄)²/Sxx)``) and its degrees of freedom ``n − 2``."""
    x = np.log10(np.asarray(budgets, dtype=float))
    y = np.log10(np.asarray(values, dtype=float))
    n = x.size
    resid = y - (math.log10(law.A) + law.alpha * x)
    dof = n - 2
    s = math.sqrt(float(np.sum(resid ** 2)) / dof) if dof > 0 else float("nan")
    sxx = float(np.sum((x - x.mean()) ** 2))
    x0 = math.log10(at)
    se = s * math.sqrt(1 + 1 / n + (x0 - x.mean()) ** 2 / sxx) if sxx > 0 else float("nan")
    return float(law(at)), se, dof


@dataclass
class Sigmoid:
    """accuracy = 1 / (1 + exp(k·(x − x0))): falls from 1 to 0 as the answer NLL x grows (k > 0);
    ``x0`` is the NLL at 50% accuracy. Fitted as a binomial logistic regression."""

    k: float
    x0: float

    def __call__(self, x: np.ndarray | float) -> np.ndarray | float:
        z = np.clip(self.k * (np.asarray(x, dtype=float) - self.x0), -500, 500)
        return 1.0 / (1.0 + np.exp(z))


def fit_sigmoid(x: Sequence[float], accuracy: Sequence[float], n: Sequence[int] | int = 1,
                *, max_iter: int = 100, ridge: float = 1e-6) -> Sigmoid:
    """Maximum-likelihood sigmoid of ``accuracy`` (a fraction of ``n`` problems per model) against
    ``x``: logistic regression on the counts by Newton's method (a tiny ridge keeps it finite when
    the data separate perfectly). Needs at least 2 distinct x and accuracies not all 0 or all 1."""
    xs = np.asarray(x, dtype=float)
    p = np.asarray(accuracy, dtype=float)
    w = np.broadcast_to(np.asarray(n, dtype=float), xs.shape).astype(float)
    if xs.shape != p.shape or xs.size < 2:
        raise ValueError(f"a sigmoid needs at least 2 (NLL, accuracy) points, got {xs.size}")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(p))):
        raise ValueError("NLLs and accuracies must be finite")
    if np.any(p < 0) or np.any(p > 1):
        raise ValueError("accuracies must lie in [0, 1]")
    if np.any(w <= 0):
        raise ValueError("problem counts must be positive")
    if np.ptp(xs) == 0:
        raise ValueError("a sigmoid needs at least 2 distinct NLL values")
    if np.all(p == 0) or np.all(p == 1):
        raise ValueError(f"every accuracy is {p[0]:g}: the sigmoid is not identified")
    # standardize x for conditioning; logit(p) = b0 + b1·z
    mu, sd = float(xs.mean()), float(xs.std())
    z = (xs - mu) / sd
    design = np.stack([np.ones_like(z), z], axis=1)
    beta = np.zeros(2)
    for _ in range(max_iter):
        q = 1 / (1 + np.exp(-np.clip(design @ beta, -500, 500)))
        grad = design.T @ (w * (p - q)) - ridge * beta
        hess = design.T @ (design * (w * q * (1 - q))[:, None]) + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    b0, b1 = beta
    if b1 == 0:
        raise ValueError("accuracy does not change with NLL: the sigmoid is flat")
    # logit = b0 + b1 (x − mu)/sd  ⇒  k = −b1/sd, x0 = mu − b0·sd/b1
    return Sigmoid(float(-b1 / sd), float(mu - b0 * sd / b1))


def bootstrap_isoflop(points: Sequence[dict[str, float]], *, n_boot: int = 1000, seed: int = 0,
                      predict_at: float | None = None) -> dict[str, np.ndarray]:
    """Residual bootstrap over the sweep's points: every budget's IsoFLOP parabola is fitted,
    the pooled residuals are drawn with replacement onto the fitted losses, and the whole
    fit (parabolas, minima, N*(C) and the compute-optimal loss law L*(C)) is redone.
    The pooled residuals are rescaled for the parabolas' degrees of freedom.
    Returns the draws of ``alpha`` and ``A`` of N*(C) = A·C^α, the loss law's exponent, and with
    ``predict_at`` the draws of N*, D* and L* there (draws with a non-convex curve are dropped)."""
    fits, _, _ = fit_scaling(points)
    fitted, resid, rows = [], [], []
    for f in fits:
        x = np.log10(np.asarray(f.sizes))
        yhat = f.parabola(x)
        fitted.append(yhat)
        resid.extend((np.asarray(f.losses) - yhat).tolist())
        rows.append((f.budget, f.sizes))
    # fitted residuals are smaller than the errors (3 parameters per parabola): rescale them by
    # sqrt(n / (n − p)) so the draws carry the errors' variance
    n_pts, n_par = len(resid), 3 * len(fits)
    resid_arr = np.asarray(resid) * (math.sqrt(n_pts / (n_pts - n_par)) if n_pts > n_par else 1.0)
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {k: [] for k in ("alpha", "A", "loss_alpha", "n_opt", "tokens_opt",
                                                   "loss_opt")}
    for _ in range(n_boot):
        try:
            draw = [fit_isoflop(b, sizes, yhat + rng.choice(resid_arr, size=yhat.size))
                    for (b, sizes), yhat in zip(rows, fitted)]
        except ValueError:
            continue
        cs = [f.budget for f in draw]
        law = fit_power_law(cs, [f.n_opt for f in draw])
        out["alpha"].append(law.alpha)
        out["A"].append(law.A)
        if all(f.loss_opt > 0 for f in draw):
            loss_law = fit_power_law(cs, [f.loss_opt for f in draw])
            out["loss_alpha"].append(loss_law.alpha)
            if predict_at is not None:
                out["loss_opt"].append(float(loss_law(predict_at)))
        if predict_at is not None:
            out["n_opt"].append(float(law(predict_at)))
            out["tokens_opt"].append(law.tokens(predict_at))
    return {k: np.asarray(v) for k, v in out.items()}


@dataclass
class Forecast:
    """The two-stage forecast at one budget: answer NLL from the NLL(C) power law, accuracy
    from the sigmoid of that NLL, each with a 95% interval."""

    budget: float
    nll: float
    nll_ci95: list[float]
    accuracy: float
    accuracy_ci95: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "nll": self.nll, "nll_ci95": self.nll_ci95,
                "accuracy": self.accuracy, "accuracy_ci95": self.accuracy_ci95}


def two_stage_forecast(budgets: Sequence[float], nll_opt: Sequence[float],
                       model_nll: Sequence[float], model_accuracy: Sequence[float],
                       n_problems: int, at: float, *, n_boot: int = 2000, seed: int = 0
                       ) -> tuple[PowerLaw, Sigmoid, Forecast]:
    """Llama 3's downstream forecast (arXiv:2407.21783 §3.2.1): fit the compute-optimal models'
    answer NLL against FLOPs (``nll_opt`` at ``budgets``, a power law) and accuracy against NLL
    over every model (a sigmoid), and predict both at budget ``at``.

    The interval is a Monte-Carlo one over everything that varies: the NLL at ``at`` is drawn
    from the power law's prediction distribution (Student t in log10, n − 2 degrees of freedom),
    the sigmoid is refitted on models drawn with replacement, and the accuracy a model would
    *measure* on ``n_problems`` problems is drawn binomially around the sigmoid's value."""
    if len(model_nll) != len(model_accuracy):
        raise ValueError(f"{len(model_nll)} model NLLs but {len(model_accuracy)} accuracies")
    if n_problems < 1:
        raise ValueError("n_problems must be at least 1")
    nll_law = fit_power_law(budgets, nll_opt)
    sig = fit_sigmoid(model_nll, model_accuracy, n_problems)
    nll_hat, se, dof = predict_power_law(nll_law, budgets, nll_opt, at)
    rng = np.random.default_rng(seed)
    if dof > 0 and np.isfinite(se):
        log_draws = math.log10(nll_hat) + se * rng.standard_t(dof, size=n_boot)
    else:
        log_draws = np.full(n_boot, math.log10(nll_hat))
    nll_draws = 10 ** log_draws
    xs, ps = np.asarray(model_nll, dtype=float), np.asarray(model_accuracy, dtype=float)
    acc_draws = []
    for i in range(n_boot):
        idx = rng.integers(0, xs.size, size=xs.size)
        try:
            s = fit_sigmoid(xs[idx], ps[idx], n_problems)
        except (ValueError, np.linalg.LinAlgError):
            continue
        acc_draws.append(rng.binomial(n_problems, float(s(nll_draws[i]))) / n_problems)
    fc = Forecast(float(at), nll_hat, ci95(nll_draws), float(sig(nll_hat)), ci95(acc_draws))
    return nll_law, sig, fc


def plot_forecast(budgets: Sequence[float], nll_opt: Sequence[float], nll_law: PowerLaw,
                  model_nll: Sequence[float], model_accuracy: Sequence[float], sig: Sigmoid,
                  forecast: Forecast, path: str | Path, *, measured_nll: float | None = None,
                  measured_accuracy: float | None = None) -> Path:
    """Two panels: the compute-optimal answer NLL against FLOPs with its power law, and accuracy
    against NLL with the sigmoid; the forecast at the held-out budget with its 95% interval, and
    what was measured there."""
    from reasonlab.plots import pyplot, save_figure

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    cs = np.asarray(budgets, dtype=float)
    grid = np.logspace(math.log10(cs.min() / 1.5), math.log10(max(cs.max(), forecast.budget) * 1.5), 50)
    ax1.loglog(cs, nll_opt, "o", color="C0", label="compute-optimal models (fit)")
    ax1.loglog(grid, nll_law(grid), "-", color="C1",
               label=f"NLL = {nll_law.A:.3g}·C^{nll_law.alpha:.3f}")
    lo, hi = forecast.nll_ci95
    ax1.errorbar([forecast.budget], [forecast.nll], yerr=[[forecast.nll - lo], [hi - forecast.nll]],
                 fmt="s", color="C3", capsize=4, label=f"forecast at C = {forecast.budget:.2g} (95%)")
    if measured_nll is not None:
        ax1.loglog([forecast.budget], [measured_nll], "*", color="k", ms=12, label="measured")
    ax1.set_xlabel("compute C (FLOPs, 6·N·D)")
    ax1.set_ylabel("answer NLL (nats/token)")
    ax1.set_title("Stage 1: answer NLL vs compute")
    ax1.legend(fontsize=8)
    xs = np.asarray(model_nll, dtype=float)
    xg = np.linspace(min(xs.min(), forecast.nll) - 0.1, max(xs.max(), forecast.nll) + 0.1, 100)
    ax2.plot(xs, model_accuracy, "o", color="C0", alpha=0.7, label="trained models (fit)")
    ax2.plot(xg, sig(xg), "-", color="C1", label=f"sigmoid (k = {sig.k:.2f}, x0 = {sig.x0:.2f})")
    lo, hi = forecast.accuracy_ci95
    ax2.errorbar([forecast.nll], [forecast.accuracy],
                 yerr=[[forecast.accuracy - lo], [hi - forecast.accuracy]], fmt="s", color="C3",
                 capsize=4, label="forecast (95%)")
    if measured_accuracy is not None and measured_nll is not None:
        ax2.plot([measured_nll], [measured_accuracy], "*", color="k", ms=12, label="measured")
    ax2.set_xlabel("answer NLL (nats/token)")
    ax2.set_ylabel("greedy accuracy")
    ax2.set_title("Stage 2: accuracy vs answer NLL")
    ax2.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)


@dataclass
class EnvelopeForecast:
    """The compute-optimal value at a new budget from each size's own curve (see
    :func:`envelope_forecast`)."""

    budget: float
    value: float                       # min over sizes of the per-size predictions
    ci95: list[float] | None           # Monte Carlo over the per-size predictive distributions
    size: str                          # the size that attains it
    per_size: dict[str, dict[str, Any]]

    def loss_dict(self) -> dict[str, Any]:
        """As a loss forecast in the result files: ``loss_predicted``, ``loss_ci95``, ``size``,
        ``per_size``."""
        return {"loss_predicted": self.value, "loss_ci95": self.ci95, "size": self.size,
                "per_size": self.per_size}


def envelope_forecast(points: Sequence[dict[str, Any]], budget: float, *, key: str = "val_loss",
                      min_points: int = 3, n_draws: int = 4000, seed: int = 0) -> EnvelopeForecast:
    """Forecast the compute-optimal ``key`` at ``budget`` as the envelope of per-size curves
    (Chinchilla's approach 1, arXiv:2203.15556 §3.1, over final losses of separate runs): for each
    size with ``min_points`` runs at smaller budgets, a power law of ``key`` in its training tokens
    (a line in log-log), read at the tokens that size gets at ``budget``; the forecast is the
    lowest of them. The interval draws each size's value from its Student-t predictive
    distribution (the OLS prediction interval in log space, with the residual scale pooled over
    the sizes) and takes the minimum per draw.

    ``points``: dicts with ``size``, ``tokens``, ``flops`` and ``key``. Unlike one power law
    through the IsoFLOP minima, it needs no shape for L*(C): each size's curve bends on its own."""
    from scipy import stats

    by: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        if p.get(key) is not None and p["tokens"] > 0 and p[key] > 0:
            by.setdefault(p["size"], []).append(p)
    per: dict[str, dict[str, Any]] = {}
    fits = {}
    for size, pts in by.items():
        if len(pts) < max(min_points, 2) or len({p["tokens"] for p in pts}) < 2:
            continue
        x = np.log([p["tokens"] for p in pts])
        y = np.log([p[key] for p in pts])
        slope, icpt = np.polyfit(x, y, 1)
        x0 = math.log(budget * float(np.mean([p["tokens"] / p["flops"] for p in pts])))
        fits[size] = (x, y, float(slope), float(icpt), x0)
    if not fits:
        raise ValueError(f"no size has {min_points} runs to fit its {key} curve")
    # One residual scale for every size's line (pooled over sizes: their noise is alike, and a
    # size with three runs alone would give a one-degree-of-freedom interval).
    sse = sum(float(np.sum((y - (b + a * x)) ** 2)) for x, y, a, b, _ in fits.values())
    dof = sum(x.size - 2 for x, *_ in fits.values())
    s = math.sqrt(sse / dof) if dof > 0 else float("nan")
    for size, (x, y, slope, icpt, x0) in fits.items():
        sxx = float(np.sum((x - x.mean()) ** 2))
        se = s * math.sqrt(1 + 1 / x.size + (x0 - x.mean()) ** 2 / sxx)
        per[size] = {"value": math.exp(icpt + slope * x0), "tokens": math.exp(x0),
                     "exponent": slope, "n_points": int(x.size), "se_log": se}
    best = min(per, key=lambda k: per[k]["value"])
    interval = None
    if dof > 0:
        rng = np.random.default_rng(seed)
        t = stats.t.rvs(dof, size=(len(per), n_draws), random_state=rng)
        logs = np.array([[math.log(d["value"])] for d in per.values()])
        ses = np.array([[d["se_log"]] for d in per.values()])
        interval = ci95(np.exp(logs + ses * t).min(axis=0))
    return EnvelopeForecast(budget=float(budget), value=per[best]["value"], ci95=interval,
                            size=best, per_size=per)
