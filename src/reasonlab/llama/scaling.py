"""The IsoFLOP sweep on the tiny herd (arXiv:2407.21783 §3.2.1): train every size at every
compute budget, then fit N*(C) = A·C^α with :mod:`reasonlab.llama.scaling_fit`.

For each compute budget C, models of several sizes N are trained on D = C / (6·N) tokens
(C ≈ 6·N·D) with the pretraining loop (:func:`reasonlab.llama.pretrain.pretrain`); the fits and
the plot are pure functions of the resulting (budget, N, loss) points.

N counts **non-embedding** parameters by default (Kaplan et al. 2020: it gives cleaner laws at
small scale, where the untied input/output embeddings are a large share of the model);
``param_count="total"`` counts every parameter.

Sizes are presets (:mod:`reasonlab.llama.configs`): the tiny herd and the micro shapes below it.
On a CPU the compute-optimal size at affordable budgets lies below the smallest herd member, so
an IsoFLOP curve over the herd alone has its minimum at (or beyond) its left edge.
:func:`run_scaling` writes ``results.json`` and ``isoflops.png`` into the run directory.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reasonlab.config import ConfigError, check_choice, check_range
from reasonlab.llama.scaling_fit import (  # noqa: F401 (the fits are public here too)
    IsoFLOPFit, Parabola, PowerLaw, fit_isoflop, fit_parabola, fit_power_law, fit_scaling, flops,
    plot_isoflops, r_squared, tokens_for_budget,
)

log = logging.getLogger(__name__)

PARAM_COUNTS = ("non_embedding", "total")


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
    """The shapes a sweep can use: every preset (the micro shapes, the tiny herd, Llama 3)."""
    from reasonlab.llama.configs import known_presets

    return known_presets()


@functools.lru_cache(maxsize=None)
def size_params(name: str, vocab_size: int, param_count: str) -> int:
    """N of a size at ``vocab_size``: all parameters, or without the embeddings."""
    from reasonlab.llama.configs import count_parameters, preset

    return count_parameters(preset(name, vocab_size=vocab_size),
                            non_embedding=param_count == "non_embedding")


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
    from reasonlab.runs import Run, atomic_write_json, finished_results

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
        res = finished_results(sub)
        if res is None:
            steps = p["steps"]
            pcfg = PretrainConfig(
                preset=p["size"], seq_len=cfg.seq_len, batch_size=cfg.batch_size,
                max_steps=steps, lr=cfg.lr, warmup_steps=max(1, int(cfg.warmup_frac * steps)),
                min_lr_ratio=cfg.min_lr_ratio, eval_every=steps, eval_batches=cfg.eval_batches,
                checkpoint_every=steps, keep_checkpoints=1, log_every=max(1, steps // 10),
                seed=cfg.seed, device=cfg.device, distributed="none", threads=cfg.threads)
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
