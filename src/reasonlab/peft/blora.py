"""Bayesian-LoRA (B-LoRA): a LoRA adapter that learns its rank and the bit-width of each matrix.

Meo, Sycheva, Goyal, Dauwels, "Bayesian-LoRA: LoRA based Parameter Efficient Fine-Tuning using
Optimal Quantization levels and Rank Values through Differentiable Bayesian Gates",
arXiv:2406.13046 (§3: the SVD-triplet adapter, the rank gates and the quantization gates; §3.3 the
regularizer). Checked against the authors' PEFT fork (``src/peft/tuners/blora/{config,layer,
model}.py``) and the quantizer of Bayesian Bits (van Baalen et al., arXiv:2005.07093, §2, Qualcomm's
``straight_through.py``). The exported adapter is a plain HF PEFT LoRA adapter (``export.py``).

The layer (AdaLoRA's SVD triplet, arXiv:2303.10512 §3.1), for a frozen ``nn.Linear`` W::

    y = W x + (alpha / r) * B_q ( (E_q * [1, z_1, ..., z_{r-1}]) * (A_q x) )

* rank gates: r-1 hard-concrete gates g_i (Louizos et al., arXiv:1712.01312 §4), nested by a
  cumulative product z_i = prod_{j<=i} g_j, so rank i is on only if every lower rank is; the first
  rank is always kept.
* quantization gates: A, E and B are fake-quantized with Bayesian Bits' residual decomposition
  ``x_q = x2 + z4 (e4 + z8 (e8 + z16 (e16 + z32 e32)))`` on nested grids (2, 4, 8, 16, 32 bits);
  ``x_b`` is ``x`` on the b-bit grid over ``[min x, max x]`` (2^b levels), ``e_b = x_b - x_{b/2}``,
  rounding passes gradients straight through. 32 bits is the float32 tensor itself.
* training samples the gates (hard concrete with u ~ U(0, 1)); evaluation uses the deterministic
  gate ``clip(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1)`` rounded to 0/1 (on iff > 0.5), so
  the evaluated adapter has a definite rank and bit-width per matrix.
* E starts at zero here (``init_e="zero"``), so the untrained adapter is the identity map on the
  model's outputs; ``init_e="normal"`` is the fork's N(0, 1).

The regularizer (``regularizer``) is the expected number of active gates per quantizer (the fork's
default, mu = 1) or BOP-weighted (Bayesian Bits' ``reg_type="bop"``): each gate costs the MACs it
switches times the bits it adds, divided by the adapter's full-precision BOPs, so the sum is the
expected relative BOPs. BOPs count MACs x weight bits x activation bits (activations stay at 32).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from reasonlab.config import ConfigError, check_choice, check_range

BITS = (2, 4, 8, 16, 32)
BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1
MATRICES = ("A", "E", "B")


@dataclass
class BLoRAConfig:
    """Every knob of the adapter and its gates."""

    r: int = 8  # initial (maximal) rank
    alpha: float = 16.0  # scaling alpha / r, as LoRA
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    init_e: str = "zero"  # zero (identity start) | normal (the fork's N(0, 1))
    init_std: float = 0.02  # A, B ~ N(0, init_std)
    dropout: float = 0.0
    rank_gates: bool = True
    quant_gates: bool = True
    log_alpha_init: float = 6.0  # every gate starts on (P(on) ~ 1)
    regularizer: str = "count"  # count (expected active gates) | bop (expected relative BOPs)
    reg_weight: float = 1e-3  # lambda
    lr: float = 1e-3
    gate_lr: float = 1e-2

    def __post_init__(self) -> None:
        check_range("r", self.r, 1, 4096)
        check_range("alpha", self.alpha, 0.0, lo_open=True)
        if not self.target_modules:
            raise ConfigError("config key 'target_modules' is empty; give module-name patterns "
                              "such as q_proj or 'layers\\.0\\..*proj'")
        for p in self.target_modules:
            try:
                re.compile(p)
            except re.error as e:
                raise ConfigError(f"config key 'target_modules' item {p!r} is not a regular "
                                  f"expression: {e}") from None
        check_choice("init_e", self.init_e, ["zero", "normal"])
        check_range("init_std", self.init_std, 0.0)
        check_range("dropout", self.dropout, 0.0, 0.99)
        check_range("log_alpha_init", self.log_alpha_init, -20.0, 20.0)
        check_choice("regularizer", self.regularizer, ["count", "bop"])
        check_range("reg_weight", self.reg_weight, 0.0)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("gate_lr", self.gate_lr, 0.0, 10.0, lo_open=True)


# --------------------------------------------------------------------------- gates


def hard_concrete(log_alpha: torch.Tensor, training: bool) -> torch.Tensor:
    """Hard-concrete gate values: a sample while training, the deterministic 0/1 gate else."""
    if training:
        u = torch.rand_like(log_alpha).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
    det = (torch.sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
    return (det > 0.5).to(log_alpha.dtype)


def prob_on(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(gate > 0) of a hard-concrete gate: sigmoid(log_alpha - beta log(-gamma / zeta))."""
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


def nested(gates: torch.Tensor) -> torch.Tensor:
    """Rank gates made nested: [1, g1, g1 g2, ...] (rank 0 always on)."""
    return torch.cat([gates.new_ones(1), torch.cumprod(gates, 0)])


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def grid(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``x`` on the ``bits``-bit grid of 2^bits levels over [min x, max x] (straight-through)."""
    lo, hi = x.min().detach(), x.max().detach()
    if bits >= 32:
        return x
    step = (hi - lo) / (2 ** bits - 1)
    if float(step) == 0.0:
        return x
    return lo + step * _ste_round((x - lo) / step)


def fake_quantize(x: torch.Tensor, gates: torch.Tensor | None) -> torch.Tensor:
    """Bayesian Bits' residual quantizer: x2 + z4 (e4 + z8 (e8 + z16 (e16 + z32 e32))).

    ``gates`` are z4, z8, z16, z32 (any values in [0, 1]); None means full precision."""
    if gates is None:
        return x
    levels = [grid(x, b) for b in BITS]
    out = levels[-1] - levels[-2]
    for i in range(len(BITS) - 1, 0, -1):
        out = gates[i - 1] * out
        if i > 1:
            out = levels[i - 1] - levels[i - 2] + out
    return levels[0] + out


def bit_width(gates: torch.Tensor) -> int:
    """The bit-width the 0/1 gates z4, z8, z16, z32 select (nested: a gate counts only if the
    ones below it are on)."""
    b = BITS[0]
    for g, bits in zip(gates.tolist(), BITS[1:]):
        if g <= 0.5:
            break
        b = bits
    return b


# --------------------------------------------------------------------------- the layer


class BLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus the gated, fake-quantized SVD-triplet adapter."""

    def __init__(self, base: nn.Linear, cfg: BLoRAConfig):
        super().__init__()
        self.base_layer = base
        for p in base.parameters():
            p.requires_grad_(False)
        r, d_in, d_out = cfg.r, base.in_features, base.out_features
        dev, dt = base.weight.device, base.weight.dtype
        self.r, self.d_in, self.d_out = r, d_in, d_out
        self.scaling = cfg.alpha / r
        self.use_rank_gates, self.use_quant_gates = cfg.rank_gates, cfg.quant_gates
        self.lora_A = nn.Parameter(torch.randn(r, d_in, device=dev, dtype=dt) * cfg.init_std)
        self.lora_B = nn.Parameter(torch.randn(d_out, r, device=dev, dtype=dt) * cfg.init_std)
        e = torch.zeros(r, device=dev, dtype=dt) if cfg.init_e == "zero" else torch.randn(r, device=dev, dtype=dt)
        self.lora_E = nn.Parameter(e)
        self.rank_log_alpha = nn.Parameter(torch.full((max(r - 1, 0),), cfg.log_alpha_init, device=dev))
        self.quant_log_alpha = nn.Parameter(torch.full((3, len(BITS) - 1), cfg.log_alpha_init, device=dev))
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.quantize = True  # False: evaluate the adapter at full precision (rank gates still on)
        self.forced_rank: int | None = None  # tests/analysis: keep only the first k ranks

    # gates ----------------------------------------------------------------
    def rank_mask(self) -> torch.Tensor:
        """[1, z_1, ..., z_{r-1}]: sampled while training, 0/1 at evaluation."""
        if self.forced_rank is not None:
            m = torch.zeros(self.r, device=self.lora_E.device)
            m[: self.forced_rank] = 1.0
            return m
        if not self.use_rank_gates or self.r == 1:
            return torch.ones(self.r, device=self.lora_E.device)
        return nested(hard_concrete(self.rank_log_alpha, self.training))

    def quant_gates(self, i: int) -> torch.Tensor | None:
        if not (self.use_quant_gates and self.quantize):
            return None
        return hard_concrete(self.quant_log_alpha[i], self.training)

    def adapter_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A_q, E_q * rank mask, B_q) as used by the forward pass."""
        a = fake_quantize(self.lora_A, self.quant_gates(0))
        e = fake_quantize(self.lora_E, self.quant_gates(1)) * self.rank_mask()
        b = fake_quantize(self.lora_B, self.quant_gates(2))
        return a, e, b

    def delta_weight(self) -> torch.Tensor:
        """The adapter as a (d_out x d_in) matrix: scaling * B diag(E) A."""
        a, e, b = self.adapter_weights()
        return self.scaling * (b * e) @ a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, e, b = self.adapter_weights()
        h = F.linear(self.dropout(x), a) * e
        return self.base_layer(x) + self.scaling * F.linear(h, b)

    # reports --------------------------------------------------------------
    @torch.no_grad()
    def effective_rank(self) -> int:
        was = self.training
        self.train(False)
        k = int(self.rank_mask().sum().item())
        self.train(was)
        return k

    @torch.no_grad()
    def bit_widths(self) -> dict[str, int]:
        if not self.use_quant_gates:
            return {m: 32 for m in MATRICES}
        return {m: bit_width(hard_concrete(self.quant_log_alpha[i], False))
                for i, m in enumerate(MATRICES)}

    def macs_per_rank(self) -> tuple[int, int, int]:
        """MACs per token that one rank costs in A, E and B."""
        return self.d_in, 1, self.d_out

    def regularizer(self, kind: str, full_bops: float) -> torch.Tensor:
        """Expected cost of this adapter's gates (see the module docstring)."""
        device = self.rank_log_alpha.device
        if self.use_rank_gates and self.r > 1:
            on = torch.cat([torch.ones(1, device=device), torch.cumprod(prob_on(self.rank_log_alpha), 0)])
        else:
            on = torch.ones(self.r, device=device)
        if self.use_quant_gates:
            q = torch.cumprod(prob_on(self.quant_log_alpha), 1)  # (3, 4): P(z4), P(z4 z8), ...
        else:
            q = torch.ones(3, len(BITS) - 1, device=device)
        total = torch.zeros((), device=device)
        for i, macs in enumerate(self.macs_per_rank()):
            if kind == "count":
                per_rank = 1.0 + q[i].sum()
                total = total + on.sum() * per_rank / self.r
            else:
                inc = torch.tensor([b - a for a, b in zip(BITS[:-1], BITS[1:])], device=device,
                                   dtype=q.dtype)
                bits = BITS[0] + (q[i] * inc).sum()
                total = total + on.sum() * macs * bits * 32 / full_bops
        return total


# --------------------------------------------------------------------------- attaching to a model


def _matches(name: str, patterns: list[str]) -> bool:
    """PEFT's target_modules rule: the name equals a pattern, ends with ``.pattern``, or a pattern
    matches the whole name as a regular expression."""
    return any(name == p or name.endswith("." + p) or re.fullmatch(p, name) for p in patterns)


def apply_blora(model: nn.Module, cfg: BLoRAConfig) -> list[str]:
    """Freeze ``model`` and wrap every ``nn.Linear`` whose name matches ``cfg.target_modules``;
    returns the wrapped module names. Raises ValueError if none matches."""
    for p in model.parameters():
        p.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(n, cfg.target_modules)]
    if not names:
        linears = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"no nn.Linear matches target_modules {cfg.target_modules}; the model's "
                         f"linear layers are named {linears}")
    for n in names:
        parent_name, _, child = n.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, BLoRALinear(getattr(parent, child), cfg))
    model.blora_config = cfg  # type: ignore[attr-defined]
    return names


def blora_layers(model: nn.Module) -> Iterator[tuple[str, BLoRALinear]]:
    for n, m in model.named_modules():
        if isinstance(m, BLoRALinear):
            yield n, m


def _gate_names() -> tuple[str, str]:
    return "rank_log_alpha", "quant_log_alpha"


def param_groups(model: nn.Module, cfg: BLoRAConfig) -> list[dict[str, Any]]:
    """Optimizer groups: adapter weights at ``lr``, gate logits at ``gate_lr`` (no weight decay)."""
    weights, gates = [], []
    for _, layer in blora_layers(model):
        weights += [layer.lora_A, layer.lora_E, layer.lora_B]
        if layer.use_rank_gates:
            gates.append(layer.rank_log_alpha)
        if layer.use_quant_gates:
            gates.append(layer.quant_log_alpha)
    groups = [{"params": weights, "lr": cfg.lr}]
    if gates:
        groups.append({"params": gates, "lr": cfg.gate_lr, "weight_decay": 0.0})
    return groups


def trainable_parameters(model: nn.Module) -> int:
    """Adapter weights and gate logits of a B-LoRA model."""
    return sum(p.numel() for g in param_groups(model, model.blora_config) for p in g["params"])


def full_bops(model: nn.Module) -> float:
    """BOPs per token of the adapters at full rank and 32 x 32 bits."""
    return float(sum(l.r * sum(l.macs_per_rank()) * 32 * 32 for _, l in blora_layers(model)))


def regularizer(model: nn.Module) -> torch.Tensor:
    """Sum of the gate regularizers of every adapter (``cfg.regularizer`` decides the kind)."""
    cfg = model.blora_config
    fb = full_bops(model)
    return sum(l.regularizer(cfg.regularizer, fb) for _, l in blora_layers(model))


def set_quantize(model: nn.Module, on: bool) -> None:
    """Evaluate with fake quantization (on) or at full precision (off; rank gates still apply)."""
    for _, l in blora_layers(model):
        l.quantize = on


# --------------------------------------------------------------------------- reports, BOPs


def bops(layers: list[dict[str, int]], *, act_bits: int = 32) -> float:
    """BOPs per token of adapters given as dicts with d_in, d_out, rank and bits_A/E/B:
    MACs x weight bits x activation bits summed over the three matrices."""
    total = 0.0
    for l in layers:
        k = l["rank"]
        total += k * l["d_in"] * l["bits_A"] * act_bits
        total += k * l["bits_E"] * act_bits
        total += k * l["d_out"] * l["bits_B"] * act_bits
    return total


def lora_bops(layers: list[dict[str, int]], r: int, bits: int = 32, act_bits: int = 32) -> float:
    """BOPs per token of plain LoRA (A: r x d_in, B: d_out x r) on the same modules."""
    return float(sum(r * (l["d_in"] + l["d_out"]) * bits * act_bits for l in layers))


@torch.no_grad()
def report(model: nn.Module) -> dict[str, Any]:
    """Effective rank and bit-widths per adapted matrix, and the adapter's relative BOPs (vs the
    same adapter at full rank and 32 bits)."""
    layers = []
    for n, l in blora_layers(model):
        bw = l.bit_widths()
        layers.append({"module": n, "d_in": l.d_in, "d_out": l.d_out, "r": l.r,
                       "rank": l.effective_rank(), "bits_A": bw["A"], "bits_E": bw["E"],
                       "bits_B": bw["B"]})
    full = bops([{**l, "rank": l["r"], "bits_A": 32, "bits_E": 32, "bits_B": 32} for l in layers])
    now = bops(layers)
    return {"layers": layers, "bops": now, "full_bops": full,
            "relative_bops": now / full if full else 0.0,
            "effective_ranks": {l["module"]: l["rank"] for l in layers},
            "bit_widths": {l["module"]: {m: l[f"bits_{m}"] for m in MATRICES} for l in layers}}


# --------------------------------------------------------------------------- merge, save, load


@torch.no_grad()
def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter (gates at their evaluation values) into its base weight and put the
    plain ``nn.Linear`` back; returns the model."""
    for n, l in list(blora_layers(model)):
        was = l.training
        l.train(False)
        base = l.base_layer
        base.weight += l.delta_weight().to(base.weight.dtype)
        l.train(was)
        parent_name, _, child = n.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, base)
    return model


ADAPTER_WEIGHTS = "blora_adapter.safetensors"
ADAPTER_CONFIG = "blora_config.json"


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors (weights and gate logits) by module name."""
    out = {}
    for n, l in blora_layers(model):
        for k in ("lora_A", "lora_E", "lora_B", "rank_log_alpha", "quant_log_alpha"):
            out[f"{n}.{k}"] = getattr(l, k).detach().cpu().contiguous()
    return out


def save_adapter(model: nn.Module, out_dir) -> None:
    """Write the adapter alone: ``blora_adapter.safetensors`` and ``blora_config.json``."""
    import dataclasses
    from pathlib import Path

    from safetensors.torch import save_file

    from reasonlab.runs import atomic_write_json

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (ADAPTER_WEIGHTS + ".tmp")
    save_file(adapter_state(model), str(tmp), metadata={"format": "pt"})
    tmp.replace(d / ADAPTER_WEIGHTS)
    atomic_write_json(d / ADAPTER_CONFIG, {"config": dataclasses.asdict(model.blora_config),
                                           "modules": [n for n, _ in blora_layers(model)]})


def load_adapter(model: nn.Module, adapter_dir) -> nn.Module:
    """Attach a saved adapter to a fresh copy of its base model (same module names)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from reasonlab.config import from_dict
    from reasonlab.runs import read_json

    d = Path(adapter_dir)
    if not (d / ADAPTER_CONFIG).exists():
        raise FileNotFoundError(f"no B-LoRA adapter in {d} (missing {ADAPTER_CONFIG})")
    meta = read_json(d / ADAPTER_CONFIG)
    cfg = from_dict(BLoRAConfig, meta["config"])
    names = apply_blora(model, cfg)
    if sorted(names) != sorted(meta["modules"]):
        raise ValueError(f"the adapter in {d} was made for modules {meta['modules']}, this model "
                         f"matches {names}")
    state = load_file(str(d / ADAPTER_WEIGHTS))
    layers = dict(blora_layers(model))
    for key, t in state.items():
        n, _, k = key.rpartition(".")
        getattr(layers[n], k).data.copy_(t)
    return model
