"""Hand-tuned baselines for the comparison and their search spaces.

Adam, Adam+cosine and SGD+momentum are ``torch.optim`` (with ``LambdaLR`` for schedules).
Normalized SGD with decay (per-tensor unit-RMS momentum direction) and a LAMB-style layer-wise
trust-ratio Adam are small hand-written optimizers: torch has neither.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import numpy as np
import torch

BASELINES = ("adam", "adam_cosine", "sgd_momentum", "nsgd_decay", "lamb")

# Search spaces: a log-spaced learning-rate range and a small grid of the other settings.
SEARCH_SPACES: dict[str, dict[str, Any]] = {
    "adam": {"lr": (1e-4, 1.0), "grid": {"beta1": [0.8, 0.9, 0.95], "beta2": [0.99, 0.999]}},
    "adam_cosine": {"lr": (1e-4, 1.0), "grid": {"beta1": [0.8, 0.9, 0.95],
                                                "final_frac": [0.0, 0.1]}},
    "sgd_momentum": {"lr": (1e-3, 30.0), "grid": {"momentum": [0.5, 0.8, 0.9, 0.95, 0.99]}},
    "nsgd_decay": {"lr": (1e-4, 1.0), "grid": {"momentum": [0.0, 0.5, 0.9],
                                               "decay": ["linear", "cosine", "exp"]}},
    "lamb": {"lr": (1e-4, 1.0), "grid": {"beta1": [0.8, 0.9, 0.95],
                                         "decay": ["none", "cosine"]}},
}


def schedule(kind: str, horizon: int, final_frac: float = 0.0) -> Callable[[int], float]:
    """LR multiplier at step t: none, linear or cosine to ``final_frac`` at ``horizon``, or exp
    (×0.01 at the horizon). Past the horizon the value is held at its end."""
    def f(t: int) -> float:
        s = min(t / horizon, 1.0)
        if kind == "none":
            return 1.0
        if kind == "linear":
            return final_frac + (1 - final_frac) * (1 - s)
        if kind == "cosine":
            return final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * s))
        if kind == "exp":
            return 0.01 ** s
        raise ValueError(f"unknown schedule '{kind}'")
    return f


class _PerTensor(torch.optim.Optimizer):
    """``step`` calls ``_update(p, state, group)`` for every parameter that has a gradient."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, self.state[p], group)
        return loss

    def _update(self, p: torch.Tensor, st: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError


class NormalizedSGD(_PerTensor):
    """Heavy-ball momentum whose direction is normalized to unit RMS per tensor (LARS-like
    layer-wise scale-freeness without the weight-norm factor)."""

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9, eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "momentum": momentum, "eps": eps})

    def _update(self, p: torch.Tensor, st: dict[str, Any], group: dict[str, Any]) -> None:
        buf = st.get("momentum_buffer")
        if buf is None:
            buf = st["momentum_buffer"] = p.grad.clone()
        else:
            buf.mul_(group["momentum"]).add_(p.grad)
        rms = buf.pow(2).mean().sqrt()
        p.add_(buf, alpha=-group["lr"] / (float(rms) + group["eps"]))


class Lamb(_PerTensor):
    """LAMB without weight decay: the Adam step scaled per tensor by ‖w‖ / ‖adam step‖."""

    def __init__(self, params: Iterable[Any], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    def _update(self, p: torch.Tensor, st: dict[str, Any], group: dict[str, Any]) -> None:
        b1, b2 = group["betas"]
        if not st:
            st["step"] = 0
            st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
        st["step"] += 1
        t = st["step"]
        st["m"].lerp_(p.grad, 1 - b1)
        st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
        u = (st["m"] / (1 - b1 ** t)) / ((st["v"] / (1 - b2 ** t)).sqrt() + group["eps"])
        wn, un = float(p.norm()), float(u.norm())
        trust = wn / un if wn > 0 and un > 0 else 1.0
        p.add_(u, alpha=-group["lr"] * trust)


def build_baseline(name: str, params: Iterable[Any], hp: dict[str, Any], horizon: int
                   ) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer and (or None) its ``LambdaLR`` scheduler for baseline ``name``."""
    lr = float(hp["lr"])
    sched = None
    if name == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(
            params, lr=lr, betas=(hp.get("beta1", 0.9), hp.get("beta2", 0.999)))
    elif name == "adam_cosine":
        opt = torch.optim.Adam(params, lr=lr, betas=(hp.get("beta1", 0.9), 0.999))
        sched = schedule("cosine", horizon, hp.get("final_frac", 0.0))
    elif name == "sgd_momentum":
        opt = torch.optim.SGD(params, lr=lr, momentum=hp.get("momentum", 0.9))
    elif name == "nsgd_decay":
        opt = NormalizedSGD(params, lr=lr, momentum=hp.get("momentum", 0.9))
        sched = schedule(hp.get("decay", "linear"), horizon)
    elif name == "lamb":
        opt = Lamb(params, lr=lr, betas=(hp.get("beta1", 0.9), 0.999))
        sched = schedule(hp.get("decay", "none"), horizon)
    else:
        raise ValueError(f"unknown baseline '{name}'; known: {', '.join(BASELINES)}")
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, sched) if sched is not None else None
    return opt, scheduler


def search_grid(name: str, n_configs: int) -> list[dict[str, Any]]:
    """Up to ``n_configs`` hyper-parameter settings: every combination of the baseline's small
    grid, each with ``n_configs // n_combos`` log-spaced learning rates (at least 2)."""
    space = SEARCH_SPACES[name]
    keys = list(space["grid"])
    combos: list[dict[str, Any]] = [{}]
    for k in keys:
        combos = [{**c, k: v} for c in combos for v in space["grid"][k]]
    n_lr = max(2, n_configs // len(combos))
    if n_lr * len(combos) > n_configs:  # too small a budget for the grid: defaults only
        combos = [{k: space["grid"][k][len(space["grid"][k]) // 2] for k in keys}]
        n_lr = max(1, n_configs)
    lo, hi = space["lr"]
    lrs = np.geomspace(lo, hi, n_lr) if n_lr > 1 else np.array([math.sqrt(lo * hi)])
    return [{"lr": float(lr), **c} for c in combos for lr in lrs]
