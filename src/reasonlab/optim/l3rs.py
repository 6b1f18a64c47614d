"""L3RS: a learned layer-wise mix of base optimizers (arXiv:2408.09310, "Narrowing the Focus").

For every parameter tensor (a "layer") l at step t the update is

    Δθ_l = −λ_l(t) · Σ_p μ_{l,p}(t) · d̂_{l,p}

where d̂_{l,p} is the direction of base optimizer p (SGD, heavy-ball momentum, Adam, Lion-style
sign, RMSprop-style RMS), normalized per tensor to unit RMS so that the mix is scale-free;
λ_l(t) = base_lr · exp(z_l,0) is a per-layer step size (``step_scale="weight_rms"`` multiplies it
by the tensor's weight RMS, as LARS/LAMB's trust ratio does, so one base_lr suits the layers of a
pretrained model at every scale) and μ_l(t) = softmax(z_l,1..P) the mixing weights. ``z`` is a
small learned *linear* function (:class:`MetaModel`) of

* time features ``φ(t)``: a constant plus ``exp(−t/τ)`` for a few absolute step time-scales τ
  (``time_features="absolute"``, the default: they extrapolate to any horizon, tending to a
  constant), or polynomial progress ``t/T, (t/T)²`` (``"progress"``, needs the horizon T), or both;
* state features ``ψ_l(t)`` (optional): log-ratios of EMAs of the loss and of the layer's gradient
  norm at several decays (a_{k+1} = γ a_k + (1−γ) ξ), and the layer's weight norm relative to its
  start, clipped to [−3, 3];
* a layer embedding: each layer has its own row of coefficients on ``φ(t)``.

Base optimizer states are kept exactly as in their own algorithms; the learned part only mixes.
With ``learn_betas`` the base directions' decays (heavy-ball β, Adam's β₁/β₂, Lion's β₁/β₂, the RMS
β) are meta-parameters too, one of each for the whole run: β = sigmoid(logit(β_config) + s·z), s =
``beta_scale``.
With ``normalize="none"``, a one-hot mix on ``adam`` and ``base_lr = lr`` the optimizer performs
exactly ``torch.optim.Adam``'s update (tested).

The meta-parameters are one flat vector (what evolution strategies perturbs); :class:`MetaModel`
names its slices and saves them as a small safetensors file with the config in its metadata.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from reasonlab.config import ConfigError, check_choice, check_range
from reasonlab.optim import l3rs_kernels as kernels

DIRECTIONS = ("sgd", "momentum", "adam", "sign", "rms")
TIME_FEATURES = ("absolute", "progress", "both")
STEP_MODES = ("layerwise", "constant")  # constant: one learned scalar, no features
STEP_SCALES = ("absolute", "weight_rms")  # weight_rms: λ is relative to the tensor's weight RMS
MIX_MODES = ("layerwise", "uniform")  # uniform: fixed equal weights
LAYER_ROWS = ("tensor", "kind")  # kind: one meta row per tensor kind, shared over depth
STATE_FEATURE_NAMES = ("loss_fast_mid", "loss_mid_slow", "loss_vs_start",
                       "grad_fast_mid", "grad_mid_slow", "grad_vs_start", "weight_vs_start")
_CLIP = 3.0


@dataclass
class L3RSConfig:
    """The shape of the learned optimizer (what its meta-parameters mean)."""

    directions: list[str] = field(default_factory=lambda: ["sgd", "momentum", "adam", "sign"])
    normalize: str = "rms"  # "rms": each direction to unit RMS per tensor; "none": raw
    base_lr: float = 0.01  # λ when the log-step output is 0
    time_features: str = "absolute"
    time_scales: list[float] = field(default_factory=lambda: [10.0, 30.0, 100.0])
    horizon: int = 100  # T for the "progress" features only
    state_features: bool = True
    step_mode: str = "layerwise"
    step_scale: str = "absolute"  # "weight_rms": λ relative to each tensor's weight RMS
    mix_mode: str = "layerwise"
    layer_rows: str = "tensor"  # "kind": tensors of one kind (name minus layer index) share a row
    shared_row: bool = False  # a row common to all layers, added to each layer's own row
    learn_betas: bool = False  # the directions' decays are meta-parameters (``beta_logits``)
    beta_scale: float = 1.0  # logit shift = beta_scale · z (ES moves the decays this much faster)
    ema_decays: list[float] = field(default_factory=lambda: [0.5, 0.9, 0.99])
    momentum: float = 0.9  # heavy-ball β
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam
    lion_betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    rms_beta: float = 0.99
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if not self.directions:
            raise ConfigError("config key 'directions' must name at least one base direction")
        for d in self.directions:
            check_choice("directions", d, DIRECTIONS)
        if len(set(self.directions)) != len(self.directions):
            raise ConfigError(f"config key 'directions' has duplicates: {self.directions}")
        check_choice("normalize", self.normalize, ("rms", "none"))
        check_range("base_lr", self.base_lr, 0.0, None, lo_open=True)
        check_choice("time_features", self.time_features, TIME_FEATURES)
        for s in self.time_scales:
            check_range("time_scales", s, 0.0, None, lo_open=True)
        check_range("horizon", self.horizon, 1)
        check_choice("step_mode", self.step_mode, STEP_MODES)
        check_choice("step_scale", self.step_scale, STEP_SCALES)
        check_choice("mix_mode", self.mix_mode, MIX_MODES)
        check_choice("layer_rows", self.layer_rows, LAYER_ROWS)
        if len(self.ema_decays) != 3:
            raise ConfigError("config key 'ema_decays' must hold 3 decays (fast, mid, slow)")
        for name, vals in (("ema_decays", self.ema_decays), ("betas", self.betas),
                           ("lion_betas", self.lion_betas)):
            for v in vals:
                check_range(name, v, 0.0, 1.0)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_range("rms_beta", self.rms_beta, 0.0, 1.0)
        check_range("beta_scale", self.beta_scale, 0.0, None, lo_open=True)

    @property
    def n_time(self) -> int:
        n = 1
        if self.time_features in ("absolute", "both"):
            n += len(self.time_scales)
        if self.time_features in ("progress", "both"):
            n += 2
        return n

    @property
    def n_state(self) -> int:
        return len(STATE_FEATURE_NAMES) if self.state_features else 0


def time_basis(cfg: L3RSConfig, t: int, horizon: int | None = None) -> torch.Tensor:
    """φ(t): ``[1, exp(−t/τ)…, t/T, (t/T)²]`` as float64 (t counts steps from 0)."""
    return torch.from_numpy(_time_basis_np(cfg, t, horizon))


def _time_basis_np(cfg: L3RSConfig, t: int, horizon: int | None = None) -> np.ndarray:
    feats = [1.0]
    if cfg.time_features in ("absolute", "both"):
        feats += [math.exp(-t / tau) for tau in cfg.time_scales]
    if cfg.time_features in ("progress", "both"):
        s = t / float(horizon or cfg.horizon)
        feats += [s, s * s]
    return np.array(feats, dtype=np.float64)


BETA_NAMES = ("momentum", "adam_beta1", "adam_beta2", "lion_beta1", "lion_beta2", "rms_beta")


def _betas_of(c: L3RSConfig) -> list[float]:
    return [c.momentum, *c.betas, *c.lion_betas, c.rms_beta]


def _shift_logit(beta: float, dz: float) -> float:
    """sigmoid(logit(β) + dz); 0 and 1 stay where they are, and so does β for dz = 0."""
    if dz == 0.0 or beta <= 0.0 or beta >= 1.0:
        return beta
    x = math.log(beta / (1.0 - beta)) + dz
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def tensor_kind(name: str) -> str:
    """A parameter's kind: its name without layer indices (``model.layers.3.mlp.up_proj.weight``
    → ``model.layers.*.mlp.up_proj.weight``)."""
    return ".".join("*" if part.isdigit() else part for part in name.split("."))


def kind_rows(names: Sequence[str]) -> list[int]:
    """The meta row of each named tensor under ``layer_rows="kind"``: kinds numbered in order of
    first appearance, so every tensor of one kind (at any depth) shares a row."""
    order: dict[str, int] = {}
    return [order.setdefault(tensor_kind(n), len(order)) for n in names]


def count_rows(config: L3RSConfig, named_params: Iterable[tuple[str, Any]]) -> int:
    """The number of meta-model rows (``n_layers``) that ``config`` gives a model's named
    parameters: one per tensor, or one per kind."""
    names = [n for n, _ in named_params]
    return len(set(kind_rows(names))) if config.layer_rows == "kind" else len(names)


def write_meta_file(path: str | Path, slices: dict[str, Any], meta: dict[str, str], fmt: str,
                    extra: dict[str, Any] | None = None) -> None:
    """Meta-parameter slices as safetensors, ``meta`` (plus ``format`` and ``extra``) in its
    header, written atomically (the file format of L3RS and the MLP learned optimizer)."""
    from safetensors.torch import save

    from reasonlab.runs import atomic_write_bytes

    meta = {**meta, "format": fmt}
    if extra:
        meta["extra"] = json.dumps(extra, default=str)
    tensors = {k: v.contiguous().clone() for k, v in slices.items()}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def read_meta_file(path: str | Path, fmt: str, what: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The header and tensors of a file written by :func:`write_meta_file` in format ``fmt``;
    a missing file or another format raises an error naming the file."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"meta-parameter file not found: {p}")
    with safe_open(str(p), framework="pt") as f:
        md = f.metadata() or {}
        if md.get("format") != fmt:
            raise ValueError(f"{p} is not {what} meta-parameter file")
        return md, {k: f.get_tensor(k) for k in f.keys()}


class MetaModel:
    """The learned function features → (λ, μ): named slices of one flat float64 vector.

    Slices (L layers, K time features, P directions, F state features):

    * ``step_table`` [L, K] (``step_mode="layerwise"``) or ``log_step`` [1] (``"constant"``)
    * ``mix_table`` [L, P, K] (``mix_mode="layerwise"`` and P > 1)
    * ``step_state`` [F] and ``mix_state`` [P, F] (state features on), shared by all layers
    * ``step_shared`` [K] and ``mix_shared`` [P, K] (``shared_row``): added to every layer's row.
      The same function class, reparameterized: evolution strategies with a per-coordinate Adam
      step moves what all layers share at the speed of one coordinate instead of L
    * ``beta_logits`` [6] (``learn_betas``): shifts of the logits of the decays named in
      :data:`BETA_NAMES`; :meth:`effective_config` applies them

    All zeros means λ = base_lr everywhere and a uniform mix.
    """

    def __init__(self, config: L3RSConfig, n_layers: int, theta: Any = None):
        if n_layers < 1:
            raise ValueError("n_layers must be at least 1")
        self.config = config
        self.n_layers = n_layers
        self.layout = self._layout()
        self.size = sum(int(np.prod(s)) for s in self.layout.values())
        if theta is None:
            theta = np.zeros(self.size)
        theta = torch.as_tensor(np.asarray(theta, dtype=np.float64)).reshape(-1).clone()
        if theta.numel() != self.size:
            raise ValueError(f"meta-parameter vector has {theta.numel()} entries, "
                             f"this layout needs {self.size}")
        self.theta = theta
        self._slices = self._make_slices()

    def _layout(self) -> dict[str, tuple[int, ...]]:
        c, L = self.config, self.n_layers
        P, K, F = len(c.directions), c.n_time, c.n_state
        out: dict[str, tuple[int, ...]] = {}
        if c.step_mode == "layerwise":
            out["step_table"] = (L, K)
            if F:
                out["step_state"] = (F,)
        else:
            out["log_step"] = (1,)
        if c.mix_mode == "layerwise" and P > 1:
            out["mix_table"] = (L, P, K)
            if F:
                out["mix_state"] = (P, F)
        if c.shared_row:
            if "step_table" in out:
                out["step_shared"] = (K,)
            if "mix_table" in out:
                out["mix_shared"] = (P, K)
        if c.learn_betas:
            out["beta_logits"] = (len(BETA_NAMES),)
        return out

    def effective_config(self) -> L3RSConfig:
        """The config with the learned decays (``learn_betas``): each β of :data:`BETA_NAMES`
        becomes sigmoid(logit(β) + beta_scale·z); the config itself when they are not learned."""
        c = self.config
        if not c.learn_betas:
            return c
        z = self.slices()["beta_logits"].tolist()
        b = [_shift_logit(v, c.beta_scale * dz) for v, dz in zip(_betas_of(c), z)]
        return dataclasses.replace(c, momentum=b[0], betas=[b[1], b[2]], lion_betas=[b[3], b[4]],
                                   rms_beta=b[5])

    @property
    def learns_mix(self) -> bool:
        return "mix_table" in self.layout

    def slices(self) -> dict[str, torch.Tensor]:
        """Views of ``theta`` by name, in their shapes (writing to them writes ``theta``)."""
        return self._slices

    def _make_slices(self) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for name, shape in self.layout.items():
            n = int(np.prod(shape))
            out[name] = self.theta[i:i + n].view(shape)
            i += n
        return out

    def with_theta(self, theta: Any) -> "MetaModel":
        return MetaModel(self.config, self.n_layers, theta)

    def coefficients(self, phi: torch.Tensor, psi: torch.Tensor | None = None,
                     rows: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """λ [n] and μ [n, P] (float64) for layer ``rows`` (default all L) from time features
        φ [K] and, when the config uses them, state features ψ [n, F]."""
        lam, mu = self.coefficients_np(np.asarray(phi, dtype=np.float64),
                                       None if psi is None else np.asarray(psi, dtype=np.float64),
                                       rows)
        return torch.from_numpy(lam), torch.from_numpy(mu)

    def coefficients_np(self, phi: np.ndarray, psi: np.ndarray | None = None,
                        rows: Sequence[int] | np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`coefficients` on NumPy arrays (the optimizer's hot path: these are a few
        dozen numbers, where NumPy's per-call cost is a fraction of torch's); ``rows`` may be
        an index array."""
        c, s = self.config, self._np_slices()
        if rows is None:
            r, n = None, self.n_layers
        elif isinstance(rows, np.ndarray):  # an index array (the optimizer caches its own)
            r, n = rows, len(rows)
        else:
            rows = tuple(rows)
            r, n = self._row_index(rows), len(rows)
        P = len(c.directions)
        if "step_table" in s:
            z0 = (s["step_table"] if r is None else s["step_table"][r]) @ phi
            if "step_state" in s and psi is not None:
                z0 = z0 + psi @ s["step_state"]
        else:
            z0 = np.broadcast_to(s["log_step"], (n,))
        lam = c.base_lr * np.exp(z0)
        if "mix_table" in s:
            logits = (s["mix_table"] if r is None else s["mix_table"][r]) @ phi
            if "mix_state" in s and psi is not None:
                logits = logits + psi @ s["mix_state"].T
            with np.errstate(invalid="ignore"):  # an all −inf row gives NaN, as torch.softmax
                e = np.exp(logits - logits.max(axis=-1, keepdims=True))
                mu = e / e.sum(axis=-1, keepdims=True)
        else:
            mu = np.full((n, P), 1.0 / P)
        return lam, mu

    def _np_slices(self) -> dict[str, np.ndarray]:
        """NumPy views of the slices (sharing ``theta``'s memory, so in-place writes show); with
        ``shared_row`` the tables are the effective ones (each row plus the shared row),
        recomputed when ``theta`` changes."""
        cached = self.__dict__.get("_np_cache")
        if cached is None or cached[0] is not self.theta or cached[1] != self.theta._version:
            s = {k: v.numpy() for k, v in self._slices.items()}
            if "step_shared" in s:
                s["step_table"] = s["step_table"] + s["step_shared"]
            if "mix_shared" in s:
                s["mix_table"] = s["mix_table"] + s["mix_shared"]
            cached = (self.theta, self.theta._version, s)
            self._np_cache = cached
        return cached[2]

    def _row_index(self, rows: tuple[int, ...]) -> np.ndarray | None:
        """An index array for ``rows`` (None when they are all rows in order), cached."""
        if rows == tuple(range(self.n_layers)):
            return None
        cache = self.__dict__.setdefault("_row_cache", {})
        if rows not in cache:
            cache[rows] = np.array(rows, dtype=np.int64)
        return cache[rows]

    # -- fixed settings (tests, ablations, the Adam check) -------------------------------------
    @classmethod
    def fixed(cls, config: L3RSConfig, n_layers: int,
              mix: dict[str, float] | None = None, step: float | None = None) -> "MetaModel":
        """A meta-model with constant λ (``step``, default base_lr) and constant mix weights.

        Zero weights become −inf logits, so a one-hot mix is exact (the other directions get
        weight 0.0 and are skipped).
        """
        m = cls(config, n_layers)
        s = m.slices()
        if step is not None:
            key = "step_table" if "step_table" in s else "log_step"
            s[key].reshape(-1, s[key].shape[-1])[:, 0] = math.log(step / config.base_lr)
        if mix is not None:
            unknown = set(mix) - set(config.directions)
            if unknown:
                raise ValueError(f"mix names directions not in the config: {sorted(unknown)}")
            if not m.learns_mix:
                raise ValueError("this config has no learned mix (uniform or one direction)")
            w = torch.tensor([float(mix.get(d, 0.0)) for d in config.directions],
                             dtype=torch.float64)
            s["mix_table"][:, :, 0] = torch.log(w / w.sum())
        return m

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write the meta-parameters as safetensors (named slices; config in the metadata)."""
        write_meta_file(path, self.slices(), {"config": json.dumps(dataclasses.asdict(self.config)),
                                              "n_layers": str(self.n_layers)},
                        "reasonlab.l3rs/1", extra)

    @classmethod
    def load(cls, path: str | Path) -> "MetaModel":
        md, tensors = read_meta_file(path, "reasonlab.l3rs/1", "an L3RS")
        m = cls(L3RSConfig(**json.loads(md["config"])), int(md["n_layers"]))
        for name, view in m.slices().items():
            view.copy_(tensors[name])
        return m

    def describe(self) -> dict[str, Any]:
        return {"n_layers": self.n_layers, "n_meta_params": self.size,
                "layout": {k: list(v) for k, v in self.layout.items()}}


_BUFFERS = {"momentum": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"),
            "sign": ("lion_avg",), "rms": ("rms_avg_sq",), "sgd": ()}


class L3RS(torch.optim.Optimizer):
    """The learned optimizer. Works with any model; each parameter tensor is one "layer".

    ``meta`` gives λ and μ. Tensors are mapped to the meta-model's L layer rows in order; when the
    model has a different number of tensors, by relative depth (row ``round(i·(L−1)/(n−1))``).
    With ``layer_rows="kind"`` pass ``model.named_parameters()``: tensors of one kind share a
    row (:func:`kind_rows`), so the meta-parameters carry over to models of any depth.
    Pass the loss with ``step(closure)`` or ``step(loss=...)`` so the loss features see it.

    For speed the base optimizers' states live in flat buffers over all tensors that have
    gradients (one op per direction instead of one per tensor); ``self.state[p]`` holds views into
    them, so ``state_dict``/``load_state_dict`` work per parameter as usual. All parameters must
    share one device and dtype. Bias corrections use the optimizer's global step count. On small
    CPU models (up to ``_FUSED_MAX`` elements, float32/64) the element-wise work and the
    coefficients run in the fused kernels of :mod:`reasonlab.optim.l3rs_kernels` when numba is
    installed: three compiled calls instead of some seventy small operations.
    """

    def __init__(self, params: Iterable[Any], meta: MetaModel, horizon: int | None = None):
        super().__init__(params, {})
        self.meta = meta
        self.config = meta.effective_config()  # the decays learned with ``learn_betas``
        self.horizon = horizon or meta.config.horizon
        all_params = [p for g in self.param_groups for p in g["params"]]
        if len({(p.device, p.dtype) for p in all_params}) > 1:
            raise ValueError("L3RS needs all parameters on one device with one dtype; "
                             "use one optimizer per dtype/device")
        n, L = len(all_params), meta.n_layers
        if self.config.layer_rows == "kind":
            names = [nm for g in self.param_groups for nm in g.get("param_names", [])]
            if len(names) != n:
                raise ValueError("L3RS with layer_rows='kind' needs named parameters: pass "
                                 "model.named_parameters()")
            self._rows = kind_rows(names)
            if max(self._rows) + 1 != L:
                raise ValueError(f"the model has {max(self._rows) + 1} tensor kinds, the "
                                 f"meta-model has {L} rows")
        else:
            self._rows = [i if n == L else round(i * (L - 1) / max(n - 1, 1)) for i in range(n)]
        self._global: dict[str, Any] = {"step": 0, "loss_ema": None, "loss0": None}
        self._layout: tuple[int, ...] | None = None  # ids of the tensors in the flat buffers
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    # -- state (de)serialization ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        g = self._global
        sd["l3rs"] = {"global": {"step": g["step"], "loss0": g["loss0"],
                                 "loss_ema": None if g["loss_ema"] is None else list(g["loss_ema"])},
                      "theta": self.meta.theta.clone(), "n_layers": self.meta.n_layers,
                      "config": dataclasses.asdict(self.meta.config), "horizon": self.horizon}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("l3rs", None)
        super().load_state_dict(state_dict)
        self._layout = None  # rebuild the flat buffers from the loaded per-tensor state
        if extra is not None:
            self.meta = MetaModel(L3RSConfig(**extra["config"]), extra["n_layers"],
                                  extra["theta"].clone())
            self.config = self.meta.effective_config()
            self.horizon = extra["horizon"]
            g = extra["global"]
            self._global = {"step": int(g["step"]), "loss0": g["loss0"],
                            "loss_ema": None if g["loss_ema"] is None else list(g["loss_ema"])}

    # -- flat buffers ---------------------------------------------------------------------------
    def _build_layout(self, params: list[torch.Tensor]) -> None:
        """Concatenate the per-tensor states of ``params`` into flat buffers (zeros where a
        tensor has none yet), point ``self.state[p]`` at views of them, and precompute the
        per-tensor views every step reuses (so the hot path has no per-tensor Python work).

        The gradient and every direction are the rows of one 2-D buffer ``self._rows2d``: row 0
        the gradient (which is also the ``sgd`` direction), then one row per other direction
        (``momentum``'s row is its state buffer). Their per-tensor norms are one reduction over
        it and the update one small matrix product per tensor."""
        sizes = [p.numel() for p in params]
        ref, n, total = params[0], len(params), sum(sizes)
        c = self.config

        def views(flat: torch.Tensor) -> list[torch.Tensor]:
            return [v.view_as(p) for v, p in zip(flat.split(sizes), params)]

        others = [d for d in c.directions if d != "sgd"]
        rows2d = ref.new_zeros(1 + len(others), total)
        self._dir_row = [0 if d == "sgd" else 1 + others.index(d) for d in c.directions]
        self._flat, self._views = {}, {}
        for name in [b for d in c.directions for b in _BUFFERS[d]]:
            flat = rows2d[1 + others.index("momentum")] if name == "momentum_buffer" else None
            parts = [self.state[p].get(name, torch.zeros_like(p)).reshape(-1) for p in params]
            self._flat[name] = torch.cat(parts) if flat is None else flat.copy_(torch.cat(parts))
            self._views[name] = views(self._flat[name])
            for p, v in zip(params, self._views[name]):
                self.state[p][name] = v
        self._rows2d = rows2d
        self._flat["grad"] = rows2d[0]
        self._flat["update"] = ref.new_empty(total)
        self._views["grad"] = views(self._flat["grad"])
        self._views["update"] = views(self._flat["update"])
        for d in others:
            if d in ("adam", "sign", "rms"):
                self._flat[f"dir_{d}"] = rows2d[1 + others.index(d)]
        # on the CPU the update is a NumPy matrix product per tensor over views of the same
        # memory (one pass over the rows, no per-element coefficient buffer)
        np_dtype = _NP_DTYPES.get(ref.dtype)
        self._np_rows = (rows2d.numpy() if ref.device.type == "cpu" and np_dtype is not None
                         and _NUMPY_UPDATE else None)
        if self._np_rows is not None:
            self._np_update = self._flat["update"].numpy()
            self._np_coef = np.zeros((len(sizes), rows2d.shape[0]), dtype=np_dtype)
            self._segments = [(int(o), int(o + k)) for o, k in
                              zip(np.cumsum([0] + sizes[:-1]), sizes)]
        # small CPU models: the fused kernels (one pass for the directions and the norms, one
        # for the update); the weights are copied into a flat buffer for their norms
        self._fused = (self._np_rows is not None and _FUSED and kernels.AVAILABLE
                       and total <= _FUSED_MAX)
        if self._fused:
            empty = np.zeros(0, dtype=np_dtype)
            self._kern_states = [self._flat[b].numpy() if b in self._flat else empty
                                 for b in ("exp_avg", "exp_avg_sq", "lion_avg", "rms_avg_sq")]
            need_w = c.state_features or c.step_scale == "weight_rms"
            self._flat["weights"] = ref.new_empty(total if need_w else 0)
            self._views["weights"] = views(self._flat["weights"]) if need_w else None
            ends = np.cumsum(sizes).astype(np.int64)
            self._kern_bounds = (ends - np.array(sizes, dtype=np.int64), ends)
            self._kern_sq = np.zeros((rows2d.shape[0] + 1, len(sizes)))
            self._np_dtype = np_dtype
            self._kern_coef = {
                "loss_f": np.zeros(3), "dir_row": np.asarray(self._dir_row),
                "decays": np.asarray(c.ema_decays if c.state_features else [], dtype=np.float64),
                "ratios": np.array([_RATIO_NUM, _RATIO_DEN, _FEATURE_SCALES], dtype=np.float64),
                "lam": np.zeros(n), "mu": np.zeros((n, len(c.directions))),
                "empty1": np.zeros(0), "empty2": np.zeros((0, 0)), "empty3": np.zeros((0, 0, 0))}
        # state features: per tensor [grad-norm EMA fast, mid, slow, ‖g₀‖, ‖w₀‖] (float64 rows;
        # state["features"] views them); rows of tensors without them start on their next step
        feats = torch.zeros(n, 5, dtype=torch.float64)
        fresh = np.ones(n, dtype=bool)
        for i, p in enumerate(params):
            f = self.state[p].get("features")
            if f is not None:
                feats[i] = torch.as_tensor(f, dtype=torch.float64)
                fresh[i] = False
        self._feats, self._fresh = feats, (fresh if fresh.any() else None)
        self._feat_rows = list(feats)
        for i in np.flatnonzero(~fresh):
            self.state[params[i]]["features"] = self._feat_rows[i]
        self._sizes = sizes
        self._lengths = torch.tensor(sizes, device=ref.device)
        self._sqrt_numel = np.sqrt(np.array(sizes, dtype=np.float64))
        self._offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        self._layout = tuple(id(p) for p in params)

    def _segment_norms(self, xs: torch.Tensor) -> np.ndarray:
        """[len(xs), n] float64: the L2 norm of each tensor's slice of each row of the 2-D buffer
        ``xs`` (flat buffers as rows). On the CPU
        NumPy segment sums for small models (cheaper than a norm per slice there), a foreach norm
        over the slices otherwise (faster on large buffers: no squared copy)."""
        if (xs[0].device.type != "cpu" or xs[0].dtype not in _NP_DTYPES
                or xs[0].numel() > _NUMPY_NORM_MAX):
            parts = [part for x in xs for part in x.split(self._sizes)]
            return torch.stack(torch._foreach_norm(parts)).double().cpu().numpy().reshape(
                len(xs), -1)
        sq, dtype = self.__dict__.get("_sq_buf"), _NP_DTYPES[xs[0].dtype]
        if sq is None or sq.shape[0] < len(xs) or sq.shape[1] != xs[0].numel() or sq.dtype != dtype:
            sq = self._sq_buf = np.empty((len(xs), xs[0].numel()), dtype=dtype)
        a = xs.detach().numpy()
        np.multiply(a, a, out=sq[:len(xs)])
        out = np.add.reduceat(sq[:len(xs)], self._offsets, axis=1, dtype=np.float64)
        return np.sqrt(out, out=out)

    def _used_directions(self) -> list[bool]:
        """Which directions can get a non-zero weight: a direction whose mix logit is −inf in
        every layer (a fixed one-hot mix) is skipped. Cached until the meta-parameters change."""
        key = (id(self.meta), self.meta.theta._version)
        if getattr(self, "_used_key", None) != key:
            s = self.meta._np_slices()  # the effective tables (shared row added)
            if "mix_table" in s:
                dead = np.isneginf(s["mix_table"]).any(-1).all(0)
                self._used = [not x for x in dead.tolist()]
            else:
                self._used = [True] * len(self.config.directions)
            self._used_idx = [i for i, u in enumerate(self._used) if u]
            self._used_key = key
        return self._used

    # -- features -------------------------------------------------------------------------------
    def _state_features(self, gns: np.ndarray, wns: np.ndarray) -> np.ndarray:
        """Update each tensor's grad-norm EMAs from this step's gradient norms ``gns`` and return
        ψ [n, F]: loss EMA log-ratios (fast/mid, mid/slow, mid/start), grad-norm EMA log-ratios
        (the same three) and 10·log(‖w‖/‖w₀‖) (weight norms ``wns``), each clipped to [−3, 3].
        Vectorized over tensors."""
        decays = np.asarray(self.config.ema_decays, dtype=np.float64)
        f = self._feats.numpy()  # shares memory with the state["features"] rows
        fresh = self._fresh
        if fresh is None:  # the usual step: every tensor has its EMAs
            f[:, :3] *= decays
            f[:, :3] += (1 - decays) * gns[:, None]
        else:
            f[fresh, :4] = gns[fresh, None]
            f[fresh, 4] = wns[fresh]
            old = ~fresh
            f[old, :3] = decays * f[old, :3] + (1 - decays) * gns[old, None]
            for i in np.flatnonzero(fresh):
                self.state[self._params[i]]["features"] = self._feat_rows[i]
            self._fresh = None
        le, l0 = self._global["loss_ema"], self._global["loss0"]
        loss_f = ([0.0] * 3 if le is None else
                  [_logratio(le[0], le[1]), _logratio(le[1], le[2]), _logratio(le[1], l0)])
        psi = np.empty((len(gns), 7))
        psi[:, :3] = loss_f
        # grad-norm EMA ratios fast/mid, mid/slow, mid/start and the weight-norm ratio: one log
        # of [EMAs, ‖g₀‖, ‖w₀‖, ‖w‖]; a missing or non-positive side gives 0 (as _logratio)
        with np.errstate(divide="ignore", invalid="ignore"):
            lg = np.log(np.concatenate([f, wns[:, None]], axis=1))
            r = (lg[:, _RATIO_NUM] - lg[:, _RATIO_DEN]) * _FEATURE_SCALES
        r[~np.isfinite(r)] = 0.0
        np.clip(r, -_CLIP, _CLIP, out=psi[:, 3:])
        return psi

    # -- the step -------------------------------------------------------------------------------
    def _directions(self, t: int, need: Sequence[bool]) -> np.ndarray:
        """Advance every base optimizer's state (as in its own algorithm) and write its direction
        into its row of ``self._rows2d`` where some tensor uses it (unused rows keep zeros or
        their state). Returns each direction's scale factor, folded into its coefficient (Adam's
        bias corrections). One pass over the flat buffers per operation, whatever the
        number of tensors."""
        c, fb = self.config, self._flat
        g = fb["grad"]
        scale = np.ones(len(c.directions))
        for k, (name, used) in enumerate(zip(c.directions, need)):
            if name == "momentum":  # torch.optim.SGD (a zero buffer makes the first one g)
                fb["momentum_buffer"].mul_(c.momentum).add_(g)
            elif name == "adam":
                b1, b2 = c.betas
                m, v = fb["exp_avg"], fb["exp_avg_sq"]
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                if used:
                    out_, (sbc2, scale[k]) = fb["dir_adam"], _adam_bias(c, t)  # factor → scale
                    torch.sqrt(v, out=out_).add_(c.eps * sbc2)
                    torch.div(m, out_, out=out_)
            elif name == "sign":  # Lion: sign(β1·m + (1−β1)·g), then m ← β2·m + (1−β2)·g
                b1, b2 = c.lion_betas
                m = fb["lion_avg"]
                if used:
                    torch.lerp(m, g, 1 - b1, out=fb["dir_sign"]).sign_()
                m.lerp_(g, 1 - b2)
            elif name == "rms":
                v = fb["rms_avg_sq"]
                v.mul_(c.rms_beta).addcmul_(g, g, value=1 - c.rms_beta)
                if used:
                    out_ = fb["dir_rms"]
                    torch.div(v, 1 - c.rms_beta ** (t + 1), out=out_).sqrt_().add_(c.eps)
                    torch.div(g, out_, out=out_)
            elif name != "sgd":  # pragma: no cover - config validation rules this out
                raise ValueError(name)
        return scale

    def _fused_directions(self, t: int, need: Sequence[bool]) -> np.ndarray:
        """:meth:`_directions` and the per-tensor squared norms of every row and of the weights
        (into ``self._kern_sq``) in one call of the fused kernel."""
        c, d, dt = self.config, self.config.directions, self._np_dtype
        scale = np.ones(len(d))
        row = {name: (self._dir_row[k] if need[k] else -1) for k, name in enumerate(d)}
        b1, b2 = c.betas
        sbc2, adam_scale = _adam_bias(c, t)
        if "adam" in d and need[d.index("adam")]:
            scale[d.index("adam")] = adam_scale
        l1, l2 = c.lion_betas
        m, v, lm, vr = self._kern_states
        w = self._flat["weights"]
        kernels.directions_and_norms(
            self._np_rows, self._dir_row[d.index("momentum")] if "momentum" in d else -1,
            row.get("adam", -1), row.get("sign", -1), row.get("rms", -1), m, v, lm, vr,
            w.numpy(), *self._kern_bounds, self._kern_sq, dt(c.momentum), dt(1 - b1), dt(b2),
            dt(1 - b2), dt(c.eps * sbc2), dt(1 - l1), dt(1 - l2), dt(c.rms_beta),
            dt(1 - c.rms_beta), dt(1 - c.rms_beta ** (t + 1)), dt(c.eps))
        return scale

    def _fused_coefficients(self, t: int, norms: np.ndarray, wns: np.ndarray | None,
                            scale: np.ndarray, used: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
        """State features, λ, μ and the update's coefficients (into ``self._np_coef``) in one
        kernel call; the step's NumPy path computes the same."""
        c, k = self.config, self._kern_coef
        sl = self.meta._np_slices()
        glob = self._global
        le, l0 = glob["loss_ema"], glob["loss0"]
        loss_f = k["loss_f"]
        loss_f[:] = ((0.0, 0.0, 0.0) if le is None else
                     (_logratio(le[0], le[1]), _logratio(le[1], le[2]), _logratio(le[1], l0)))
        kernels.coefficients(
            norms[0], k["empty1"] if wns is None else wns, self._feats.numpy(), k["decays"],
            k["ratios"], _CLIP, loss_f, k["rows"], _time_basis_np(c, t, self.horizon),
            sl.get("step_table", k["empty2"]), sl.get("step_state", k["empty1"]),
            float(sl["log_step"][0]) if "log_step" in sl else 0.0,
            sl.get("mix_table", k["empty3"]), sl.get("mix_state", k["empty2"]), c.base_lr,
            c.step_scale == "weight_rms", c.normalize == "rms", norms, k["dir_row"], scale,
            np.asarray(used), self._sqrt_numel, c.eps, k["lam"], k["mu"], self._np_coef)
        return k["lam"], k["mu"]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None) -> Any:
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        c, glob = self.config, self._global
        t = glob["step"]
        glob["step"] = t + 1
        if loss is not None and c.state_features:
            lv = float(loss)
            if math.isfinite(lv):
                if glob["loss_ema"] is None:
                    glob["loss_ema"], glob["loss0"] = [lv] * 3, lv
                else:
                    glob["loss_ema"] = [gm * a + (1 - gm) * lv
                                        for gm, a in zip(c.ema_decays, glob["loss_ema"])]
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return loss
        if self._layout != tuple(map(id, params)):
            self._build_layout(params)
            self._params = params
            rows = [r for r, p in zip(self._rows, (q for gr in self.param_groups
                                                   for q in gr["params"]))
                    if p.grad is not None]
            self._row_arg = (None if rows == list(range(self.meta.n_layers))
                             else np.array(rows, dtype=np.int64))
            if self._fused:  # the meta-model row of each tensor
                self._kern_coef["rows"] = np.array(rows, dtype=np.int64)
        params, n = self._params, len(self._params)
        torch._foreach_copy_(self._views["grad"], [p.grad for p in params])
        used = self._used_directions()
        rows2d = self._rows2d
        need_w = c.state_features or c.step_scale == "weight_rms"
        norms = wns = psi = None
        if self._fused:  # directions and every norm in one kernel call
            if need_w:
                torch._foreach_copy_(self._views["weights"], params)
            scale = self._fused_directions(t, used)
            sq = np.sqrt(self._kern_sq)
            norms, wns = sq[:-1], sq[-1]
        else:
            scale = self._directions(t, used)
            # every per-tensor norm this step needs: one reduction over the rows (the gradient
            # first), one foreach pass over the parameters
            if c.state_features or c.normalize == "rms":
                norms = self._segment_norms(rows2d)
            if need_w:
                wns = torch.stack(torch._foreach_norm(params)).double().cpu().numpy()
        if self._fused and (self._fresh is None or not c.state_features):
            lam, mu = self._fused_coefficients(t, norms, wns, scale, used)  # into _np_coef
            coef = None
        else:
            if c.state_features:
                psi = self._state_features(norms[0], wns)
            lam, mu = self.meta.coefficients_np(_time_basis_np(c, t, self.horizon), psi,
                                                self._row_arg)
            if c.step_scale == "weight_rms":  # λ relative to each tensor's weight RMS (1 if 0)
                rms_w = wns / self._sqrt_numel
                lam = lam * np.where(rms_w > 0, rms_w, 1.0)
            coef = (mu * scale).T * lam  # [P, n]: λ·μ per direction (and Adam's bias correction)
            if c.normalize == "rms":
                coef = coef / (norms[self._dir_row] * scale[:, None] / self._sqrt_numel + c.eps)
            if not all(used):  # rows of unused directions are stale: exactly zero weight
                coef[~np.asarray(used)] = 0.0
            if self._np_rows is not None:
                self._np_coef.fill(0.0)
                self._np_coef[:, self._dir_row] = coef.T
        self._last = (lam, mu)
        if self._np_rows is not None:  # CPU: update = coefficients @ rows, per tensor
            cn, x, u = self._np_coef, self._np_rows, self._np_update
            if self._fused:
                kernels.mix_update(cn, x, *self._kern_bounds, u)
            else:
                for i, (a, b) in enumerate(self._segments):
                    np.matmul(cn[i], x[:, a:b], out=u[a:b])
        else:
            g = rows2d[0]
            coef_el = torch.from_numpy(coef).to(g.device, g.dtype).repeat_interleave(
                self._lengths, dim=1, output_size=g.numel())
            upd = self._flat["update"]
            act = self._used_idx
            torch.mul(coef_el[act[0]], rows2d[self._dir_row[act[0]]], out=upd)
            for k in act[1:]:
                upd.addcmul_(coef_el[k], rows2d[self._dir_row[k]])
        torch._foreach_sub_(params, self._views["update"])
        return loss

    @property
    def last_coefficients(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(λ [n], μ [n, P]) of the last step as float64 tensors (None before the first)."""
        last = self._last
        return None if last is None else (torch.from_numpy(last[0].copy()),
                                          torch.from_numpy(last[1].copy()))


def _adam_bias(c: L3RSConfig, t: int) -> tuple[float, float]:
    """Adam's bias corrections at step t (from 0), folded: m̂/(√v̂ + ε) = m/(√v + ε·√bc2) ·
    √bc2/bc1; returns (√bc2, √bc2/bc1)."""
    b1, b2 = c.betas
    sbc2 = math.sqrt(1 - b2 ** (t + 1))
    return sbc2, sbc2 / (1 - b1 ** (t + 1))


def _logratio(a: float, b: float | None, scale: float = 1.0) -> float:
    """``scale · log(a / b)`` clipped to [−3, 3]; 0 when either side is missing or not positive."""
    if b is None or not (a > 0 and b > 0) or not math.isfinite(a) or not math.isfinite(b):
        return 0.0
    return max(-_CLIP, min(_CLIP, scale * math.log(a / b)))


_FEATURE_SCALES = np.array([1.0, 1.0, 1.0, 10.0])  # the weight-norm ratio is scaled by 10
_RATIO_NUM, _RATIO_DEN = [0, 1, 1, 5], [1, 2, 3, 4]  # columns of [EMA ×3, ‖g₀‖, ‖w₀‖, ‖w‖]
_NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_NUMPY_NORM_MAX = 1 << 16  # elements: above this the foreach norm is faster on the CPU
_NUMPY_UPDATE = True  # the NumPy update on the CPU (False: the general torch path, for tests)
_FUSED = True  # the fused kernels on the CPU when numba is installed (False: NumPy/torch)
_FUSED_MAX = 1 << 15  # elements: above this the NumPy/torch path is faster (the kernels' loops
# are scalar; measured: 2x faster than that path on the 9k-parameter digits MLP, 1.7x slower
# on a 0.65M-parameter language model)
