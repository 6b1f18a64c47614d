"""A general per-parameter learned optimizer: the baseline that specialized ones are said to beat.

In the style of the small MLP learned optimizers of the learned-optimization literature
("small_fc_lopt"): every scalar parameter gets the same small MLP applied to its own features

* the gradient, momenta at several decays and the parameter value, each divided by its RMS over
  the tensor (second-moment normalization, so one MLP fits tensors of any scale),
* time features ``tanh(t/τ)`` for a few absolute time-scales τ,

and the MLP outputs a direction ``d`` and a log-magnitude ``a``; the update is

    Δθ = −base_lr · d · exp(a)        (a clipped to [−5, 5])

The last layer also sees the raw features (a linear skip), and the initial meta-parameters make
``d`` the normalized 0.9-momentum (a sensible start for evolution strategies); the hidden layers
start from a fixed random draw. It is meta-trained with the same ES machinery as L3RS
(:mod:`reasonlab.optim.es`, ``learner="lopt"``), usually on a distribution of tasks.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from reasonlab.config import ConfigError, check_range
from reasonlab.optim.l3rs import read_meta_file, write_meta_file

FORMAT = "reasonlab.lopt/1"


@dataclass
class LOptConfig:
    hidden: int = 16
    decays: list[float] = field(default_factory=lambda: [0.5, 0.9, 0.99])
    time_scales: list[float] = field(default_factory=lambda: [10.0, 100.0, 1000.0])
    base_lr: float = 0.01
    init_seed: int = 0  # the fixed random draw of the hidden layers at θ = initial
    eps: float = 1e-8

    def __post_init__(self) -> None:
        check_range("lopt.hidden", self.hidden, 1, 1024)
        if not self.decays:
            raise ConfigError("config key 'lopt.decays' must list at least one momentum decay")
        for d in self.decays:
            check_range("lopt.decays", d, 0.0, 0.9999)
        for s in self.time_scales:
            check_range("lopt.time_scales", s, 0.0, None, lo_open=True)
        check_range("lopt.base_lr", self.base_lr, 0.0, None, lo_open=True)

    @property
    def n_in(self) -> int:  # gradient, momenta, parameter, time features
        return 2 + len(self.decays) + len(self.time_scales)


class LOptModel:
    """The MLP's weights as one flat float64 vector with named slices (like ``MetaModel``)."""

    def __init__(self, config: LOptConfig, theta: Any = None):
        self.config = config
        c, h = config, config.hidden
        self.layout = {"w1": (c.n_in, h), "b1": (h,), "w2": (h, h), "b2": (h,),
                       "wo": (c.n_in + h, 2), "bo": (2,)}
        self.size = sum(int(np.prod(s)) for s in self.layout.values())
        self.n_layers = 0
        theta = self.initial_theta() if theta is None else np.asarray(theta, dtype=np.float64)
        theta = torch.as_tensor(np.asarray(theta, dtype=np.float64)).reshape(-1).clone()
        if theta.numel() != self.size:
            raise ValueError(f"meta-parameter vector has {theta.numel()} entries, "
                             f"this learned optimizer needs {self.size}")
        self.theta = theta
        self._slices, i = {}, 0
        for name, shape in self.layout.items():
            n = int(np.prod(shape))
            self._slices[name] = self.theta[i:i + n].view(shape)
            i += n

    def initial_theta(self) -> np.ndarray:
        """Hidden layers: a fixed scaled-normal draw; output: d = the normalized 0.9-momentum
        (or the middle decay), a = 0."""
        c, h = self.config, self.config.hidden
        rng = np.random.default_rng(c.init_seed)
        parts = {"w1": rng.standard_normal((c.n_in, h)) / math.sqrt(c.n_in), "b1": np.zeros(h),
                 "w2": rng.standard_normal((h, h)) / math.sqrt(h), "b2": np.zeros(h),
                 "wo": np.zeros((c.n_in + h, 2)), "bo": np.zeros(2)}
        k = min(range(len(c.decays)), key=lambda i: abs(c.decays[i] - 0.9))
        parts["wo"][1 + k, 0] = 1.0  # feature 1 + k is momentum k
        return np.concatenate([parts[n].reshape(-1) for n in self.layout])

    def slices(self) -> dict[str, torch.Tensor]:
        return self._slices

    def with_theta(self, theta: Any) -> "LOptModel":
        return LOptModel(self.config, theta)

    def describe(self) -> dict[str, Any]:
        return {"kind": "lopt", "n_meta_params": self.size,
                "layout": {k: list(v) for k, v in self.layout.items()}}

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        write_meta_file(path, self._slices, {"config": json.dumps(dataclasses.asdict(self.config))},
                        FORMAT, extra)

    @classmethod
    def load(cls, path: str | Path) -> "LOptModel":
        md, tensors = read_meta_file(path, FORMAT, "a learned-optimizer (lopt)")
        m = cls(LOptConfig(**json.loads(md["config"])))
        for name, view in m._slices.items():
            view.copy_(tensors[name])
        return m


class MLPLOpt(torch.optim.Optimizer):
    """The per-parameter MLP learned optimizer (see the module docstring)."""

    def __init__(self, params: Iterable[Any], model: LOptModel):
        super().__init__(params, {})
        self.model = model
        self.config = model.config
        s = model.slices()
        self._w = {k: v.float() for k, v in s.items()}
        self._step = 0

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        c = self.config
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return loss
        t = self._step
        self._step += 1
        sizes = [p.numel() for p in params]
        lengths = torch.tensor(sizes)
        dt = params[0].dtype
        g = torch.cat([p.grad.reshape(-1) for p in params]).float()
        w = torch.cat([p.detach().reshape(-1) for p in params]).float()
        moms = []
        for i, d in enumerate(c.decays):
            ms = [self.state[p].setdefault(f"m{i}", torch.zeros_like(p)) for p in params]
            torch._foreach_lerp_(ms, [p.grad for p in params], 1 - d)
            moms.append(torch.cat([m.reshape(-1) for m in ms]).float())
        feats = torch.stack([g, *moms, w])  # [F, N]
        sq = feats.pow(2)
        seg = torch.segment_reduce(sq.T.contiguous(), "mean", lengths=lengths, axis=0)  # [n, F]
        rms = seg.T.sqrt().add_(c.eps).repeat_interleave(lengths, dim=1)
        x = feats / rms
        tf = torch.tensor([math.tanh(t / tau) for tau in c.time_scales])
        x = torch.cat([x, tf[:, None].expand(-1, x.shape[1])]).T  # [N, n_in]
        W = self._w
        h = torch.relu(x @ W["w1"] + W["b1"])
        h = torch.relu(h @ W["w2"] + W["b2"])
        out = torch.cat([x, h], 1) @ W["wo"] + W["bo"]
        upd = c.base_lr * out[:, 0] * torch.exp(out[:, 1].clamp(-5.0, 5.0))
        for p, u in zip(params, upd.to(dt).split(sizes)):
            p.sub_(u.view_as(p))
        return loss
