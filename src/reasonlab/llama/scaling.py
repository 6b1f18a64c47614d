"""IsoFLOP scaling laws on the tiny herd (arXiv:2407.21783 §3.2.1).

For each compute budget C, models of several sizes N are trained on D = C / (6·N) tokens
(C ≈ 6·N·D); a parabola of validation loss against log10 N per budget gives the compute-optimal
size N*(C) at its minimum; a least-squares line through (log10 C, log10 N*) gives
N*(C) = A·C^α with its R². Because C = 6·N·D, the optimal token count follows
D*(C) = C / (6·N*(C)) ∝ C^(1−α) (the paper reports this exponent for tokens: ≈ 0.53).

N counts **non-embedding** parameters by default (Kaplan et al. 2020: it gives cleaner laws at
small scale, where the untied input/output embeddings are a large share of the model);
``param_count="total"`` counts every parameter.

Sizes are tiny-herd presets or :data:`MICRO_SHAPES` (smaller shapes built by the same rules): on a
CPU the compute-optimal size at affordable budgets lies below the smallest herd member, so an
IsoFLOP curve over the herd alone has its minimum at (or beyond) its left edge. Micro sizes go
through the same pretraining loop, started from a freshly initialised checkpoint (``init_from``).

The pure fitting functions (:func:`fit_parabola`, :func:`fit_isoflop`, :func:`fit_power_law`)
take plain numbers; :func:`run_scaling` trains the sweep with :func:`reasonlab.llama.pretrain.pretrain`
and writes ``results.json`` and ``isoflops.png`` into the run directory.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reasonlab.config import ConfigError, check_choice, check_range

log = logging.getLogger(__name__)

PARAM_COUNTS = ("non_embedding", "total")

# Shapes below the tiny herd, built by the same rules (GQA, FFN rule, RoPE θ 500000, eps 1e-5,
# untied embeddings); names give the non-embedding size. On a CPU the compute-optimal size at
# affordable budgets (1e11-1e12 FLOPs) is 20k-100k parameters, far below tiny-0.5m, so IsoFLOP
# curves need these to have their minimum inside the sizes.
# name: (n_layers, dim, n_heads, n_kv_heads, ffn_dim_multiplier, multiple_of, peak_lr)
MICRO_SHAPES: dict[str, tuple[int, int, int, int, float, int, float]] = {
    "micro-0.015m": (2, 24, 2, 1, 1.3, 16, 3e-3),
    "micro-0.03m": (2, 32, 2, 1, 1.3, 16, 3e-3),
    "micro-0.06m": (2, 48, 2, 1, 1.3, 16, 3e-3),
    "micro-0.1m": (2, 64, 2, 1, 1.3, 16, 3e-3),
    "micro-0.25m": (3, 80, 2, 1, 1.3, 16, 3e-3),
}


# --------------------------------------------------------------------------------------------
# Pure fits
# --------------------------------------------------------------------------------------------

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------

@dataclass
class ScalingConfig:
    """An IsoFLOP sweep: every budget × every size, trained with the pretraining loop."""

    budgets: list[float] = field(default_factory=lambda: [1e12, 3e12, 1e13, 3e13])  # FLOPs
    sizes: list[str] = field(default_factory=lambda: ["micro-0.03m", "micro-0.06m", "micro-0.1m",
                                                      "micro-0.25m", "tiny-0.5m", "tiny-2m"])
    param_count: str = "non_embedding"  # non_embedding | total: N in C = 6·N·D and in the fit
    corpus: str = "skillmath"            # skillmath | a data set name (gsm8k, …) | a text/jsonl file
    n_train_docs: int = 20000
    n_val_docs: int = 500
    vocab_size: int = 512
    digits: str = "single"               # tokenizer digit splitting (single | groups3 | none)
    seq_len: int = 128
    batch_size: int = 16
    lr: float | None = None              # peak LR; None = each preset's own
    warmup_frac: float = 0.1             # warmup steps as a fraction of each run's steps
    min_lr_ratio: float = 0.1            # cosine decay to 0.1×peak, as in the paper's runs
    min_steps: int = 20                  # budget × size pairs with fewer steps are skipped
    eval_batches: int = 16
    predict_budget: float = 1e15         # report the compute-optimal size here
    seed: int = 0
    device: str = "auto"
    threads: int = 1                     # CPU threads for torch (0 = torch's default); one
                                         # thread is fastest for tiny models on a shared CPU
    keep_checkpoints: bool = False       # keep each run's optimizer checkpoints (large)
    require_interior: bool = True        # fit N*(C) only on budgets whose minimum is inside the sizes

    def __post_init__(self) -> None:
        if len(self.budgets) < 2:
            raise ConfigError("config key 'budgets' needs at least 2 budgets (3+ for an R²)")
        for i, b in enumerate(self.budgets):
            check_range(f"budgets[{i}]", b, 0.0, None, lo_open=True)
        if len(self.sizes) < 3:
            raise ConfigError("config key 'sizes' needs at least 3 presets (a parabola per budget)")
        for s in self.sizes:
            check_choice("sizes", s, known_sizes())
        check_choice("param_count", self.param_count, PARAM_COUNTS)
        check_range("n_train_docs", self.n_train_docs, 1, None)
        check_range("n_val_docs", self.n_val_docs, 1, None)
        check_range("vocab_size", self.vocab_size, 256, None)
        check_choice("digits", self.digits, ("single", "groups3", "none"))
        check_range("seq_len", self.seq_len, 8, None)
        check_range("batch_size", self.batch_size, 1, None)
        if self.lr is not None:
            check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("warmup_frac", self.warmup_frac, 0.0, 0.5)
        check_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_range("min_steps", self.min_steps, 1, None)
        check_range("eval_batches", self.eval_batches, 1, None)
        check_range("predict_budget", self.predict_budget, 0.0, None, lo_open=True)
        check_range("threads", self.threads, 0, None)


def known_sizes() -> list[str]:
    """The shapes a sweep can use: the tiny herd (and the Llama 3 presets) plus :data:`MICRO_SHAPES`."""
    from reasonlab.llama.configs import known_presets

    return list(MICRO_SHAPES) + known_presets()


def size_config(name: str, vocab_size: int, **ids: Any):
    """The ``LlamaConfig`` of a preset or of a :data:`MICRO_SHAPES` entry (same rules as the herd)."""
    from reasonlab.llama.configs import ffn_hidden_dim, preset

    if name not in MICRO_SHAPES:
        return preset(name, vocab_size=vocab_size, **ids)
    n_layers, dim, heads, kv, mult, multiple_of, _ = MICRO_SHAPES[name]
    cfg = preset("tiny-0.5m", vocab_size=vocab_size, **ids)
    cfg.hidden_size = dim
    cfg.num_hidden_layers = n_layers
    cfg.num_attention_heads = heads
    cfg.num_key_value_heads = kv
    cfg.head_dim = dim // heads
    cfg.intermediate_size = ffn_hidden_dim(dim, mult, multiple_of)
    return cfg


def size_peak_lr(name: str) -> float:
    from reasonlab.llama.configs import peak_lr

    return MICRO_SHAPES[name][6] if name in MICRO_SHAPES else peak_lr(name)


@functools.lru_cache(maxsize=None)
def size_params(name: str, vocab_size: int, param_count: str) -> int:
    """N of a size at ``vocab_size``: all parameters, or without the (untied) embeddings."""
    from reasonlab.llama.configs import count_parameters

    cfg = size_config(name, vocab_size)
    total = count_parameters(cfg)
    if param_count == "total":
        return total
    n_emb = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2)
    return total - n_emb


def _init_micro(name: str, tokenizer, seq_len: int, seed: int, path: Path) -> Path:
    """A freshly initialised (seeded) micro model saved as an HF directory, to start from."""
    from transformers import LlamaForCausalLM

    from reasonlab.runs import seed_everything

    if not (path / "config.json").exists():
        cfg = size_config(name, len(tokenizer), max_position_embeddings=max(seq_len, 512),
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
        seed_everything(seed)
        LlamaForCausalLM(cfg).save_pretrained(str(path), safe_serialization=True)
    return path


def plan_sweep(cfg: ScalingConfig, vocab_size: int) -> list[dict[str, Any]]:
    """Every (budget, size) with its tokens and steps; ``skip`` marks pairs below ``min_steps``."""
    tokens_per_step = cfg.seq_len * cfg.batch_size
    plan = []
    for b in cfg.budgets:
        for s in cfg.sizes:
            n = size_params(s, vocab_size, cfg.param_count)
            steps = max(1, round(tokens_for_budget(b, n) / tokens_per_step))
            plan.append({"budget": float(b), "size": s, "n_params": n, "steps": steps,
                         "tokens": steps * tokens_per_step, "skip": steps < cfg.min_steps})
    return plan


def load_texts(cfg: ScalingConfig) -> tuple[list[str], list[str]]:
    """Training and validation documents (disjoint)."""
    if cfg.corpus == "skillmath":
        from reasonlab.data.skillmath import SkillMathConfig, generate, pretraining_texts

        splits = generate(SkillMathConfig(seed=cfg.seed, n_train=cfg.n_train_docs, n_val=cfg.n_val_docs,
                                          n_test=0, n_test_template=0, n_test_pair=0))
        return list(pretraining_texts(splits["train"])), list(pretraining_texts(splits["val"]))
    from reasonlab.llama.corpus import load_corpus

    docs = load_corpus(cfg.corpus, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    docs = [docs[i] for i in rng.permutation(len(docs))]
    n_val = min(cfg.n_val_docs, max(1, len(docs) // 10))
    return docs[n_val:n_val + cfg.n_train_docs], docs[:n_val]


def _machine() -> dict[str, Any]:
    import os
    import platform

    import torch

    return {"cpu_count": os.cpu_count(), "torch": torch.__version__, "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_scaling(cfg: ScalingConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train the sweep (resuming finished runs), fit, plot, and write ``results.json``."""
    from reasonlab.device import torch_threads

    with torch_threads(cfg.threads):
        return _run_scaling(cfg, out_dir)


def _run_scaling(cfg: ScalingConfig, out_dir: str | Path) -> dict[str, Any]:
    from reasonlab.llama.pretrain import PretrainConfig, pretrain
    from reasonlab.llama.tokenizer import load_or_train_tokenizer
    from reasonlab.runs import Run, atomic_write_json, read_json

    run = Run(out_dir, cfg, cfg.seed, name="scaling")
    t0 = time.time()
    train_texts, val_texts = load_texts(cfg)
    tokenizer = load_or_train_tokenizer(run.path("tokenizer"), train_texts,
                                        vocab_size=cfg.vocab_size, digits=cfg.digits)
    vocab = len(tokenizer)
    plan = plan_sweep(cfg, vocab)
    todo = [p for p in plan if not p["skip"]]
    for p in plan:
        if p["skip"]:
            log.warning("skipping %s at C=%.3g: %d steps < min_steps %d", p["size"], p["budget"],
                        p["steps"], cfg.min_steps)
    log.info("IsoFLOP sweep: %d runs, %d tokens in all", len(todo), sum(p["tokens"] for p in todo))
    points = []
    for i, p in enumerate(todo):
        sub = run.path("runs") / f"C{p['budget']:.2e}_{p['size']}"
        res_path = sub / "results.json"
        if res_path.exists():
            res = read_json(res_path)
        else:
            steps = p["steps"]
            init_from, preset_name, lr = None, p["size"], cfg.lr
            if p["size"] in MICRO_SHAPES:  # pretrain builds presets; start micro sizes from a fresh init
                init_from = str(_init_micro(p["size"], tokenizer, cfg.seq_len, cfg.seed,
                                            run.path("init") / p["size"]))
                preset_name, lr = "tiny-0.5m", cfg.lr or size_peak_lr(p["size"])
            pcfg = PretrainConfig(
                preset=preset_name, init_from=init_from, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
                max_steps=steps, lr=lr, warmup_steps=max(1, int(cfg.warmup_frac * steps)),
                min_lr_ratio=cfg.min_lr_ratio, eval_every=steps, eval_batches=cfg.eval_batches,
                checkpoint_every=steps, keep_checkpoints=1, log_every=max(1, steps // 10),
                seed=cfg.seed, device=cfg.device, distributed="none")
            ts = time.time()
            res = pretrain(pcfg, tokenizer, train_texts, val_texts, sub)
            res["wall_s"] = round(time.time() - ts, 2)
            atomic_write_json(res_path, res)
            if not cfg.keep_checkpoints:
                shutil.rmtree(sub / "checkpoints", ignore_errors=True)
        n = res["n_params_non_embedding"] if cfg.param_count == "non_embedding" else res["n_params"]
        point = {"budget": p["budget"], "size": p["size"], "n_params": n, "steps": p["steps"],
                 "tokens": res["train_tokens"], "flops": flops(n, res["train_tokens"]),
                 "val_loss": res["val_loss"], "wall_s": res.get("wall_s")}
        points.append(point)
        run.log(step=i, **point)
        log.info("[%d/%d] C=%.2e %-10s N=%.3g steps=%d val_loss=%.4f", i + 1, len(todo),
                 p["budget"], p["size"], n, p["steps"], res["val_loss"])

    extrapolated = False
    try:
        fits, law, excluded = fit_scaling(points, strict=False, require_interior=cfg.require_interior)
    except ValueError as e:
        if not cfg.require_interior:
            raise
        # Fewer than two budgets have their minimum inside the sizes: fit them all, and say so.
        log.warning("%s; fitting every budget, extrapolated minima included", e)
        fits, law, excluded = fit_scaling(points, strict=False, require_interior=False)
        extrapolated = True
    label = cfg.param_count.replace("_", "-")
    plot = plot_isoflops(fits, law, run.path("isoflops.png"), cfg.predict_budget, label)
    results = {
        "alpha": law.alpha,
        "A": law.A,
        "r2": law.r2,
        "alpha_tokens": 1.0 - law.alpha,
        "param_count": cfg.param_count,
        "budgets": [float(b) for b in cfg.budgets],
        "sizes": {s: size_params(s, vocab, cfg.param_count) for s in cfg.sizes},
        "optimal": [{"budget": f.budget, "n_opt": f.n_opt, "loss_opt": f.loss_opt,
                     "tokens_opt": tokens_for_budget(f.budget, f.n_opt), "interior": f.interior,
                     "parabola_r2": f.parabola.r2,
                     "in_fit": f.budget not in {e["budget"] for e in excluded}} for f in fits],
        "n_budgets_fit": len(fits) - sum(1 for f in fits if f.budget in {e["budget"] for e in excluded}),
        "fits": [f.to_dict() for f in fits],
        "excluded_budgets": excluded,
        "extrapolated_minima_in_fit": extrapolated or any(
            not f.interior for f in fits if f.budget not in {e["budget"] for e in excluded}),
        "prediction": {"budget": cfg.predict_budget, "n_opt": float(law(cfg.predict_budget)),
                       "tokens_opt": law.tokens(cfg.predict_budget)},
        "points": points,
        "plot": plot.name,
        "vocab_size": vocab,
        "seed": cfg.seed,
        "machine": _machine(),
        "wall_s": round(time.time() - t0, 1),
    }
    run.save_results(results)
    return results
