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

With ``eval_problems`` each trained model is also scored on held-out SkillMath problems (the
per-token NLL of the reference solution and greedy accuracy, graded by
:func:`reasonlab.data.answers.check_answer`), and with ``heldout`` the largest budget is kept out
of every fit: the compute-optimal loss, answer NLL and accuracy there are forecast from the
smaller budgets (Llama 3's two-stage forecast) and compared with what its runs measure
(``forecast.png``). A non-SkillMath ``corpus`` then needs ``skillmath_docs`` > 0 so the answers
are learnable.
"""

from __future__ import annotations

import functools
import math
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reasonlab.config import ConfigError, check_choice, check_range
from reasonlab.llama.scaling_fit import (  # noqa: F401 (the fits are public here too)
    EnvelopeForecast, Forecast, IsoFLOPFit, Parabola, PowerLaw, Sigmoid, bootstrap_isoflop, ci95, fit_isoflop,
    fit_parabola, fit_power_law, fit_scaling, fit_sigmoid, flops, plot_forecast, plot_isoflops,
    envelope_forecast, predict_power_law, r_squared, tokens_for_budget, two_stage_forecast,
)

log = logging.getLogger(__name__)

PARAM_COUNTS = ("non_embedding", "total")
LOSS_FORECASTS = ("envelope", "power_law")


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
    max_steps: int = 0                   # budget × size pairs with more steps are skipped (0 = no cap)
    skillmath_docs: int = 0              # SkillMath documents added to a non-SkillMath corpus
    eval_problems: int = 0               # SkillMath problems for answer NLL + accuracy (0 = none)
    eval_max_new_tokens: int = 48        # greedy decoding length for the accuracy
    heldout: bool = False                # keep the largest budget out of the fits and forecast it
    loss_forecast: str = "envelope"      # the held-out loss forecast: envelope (each size's loss
                                         # against its tokens, the lowest at the budget) or
                                         # power_law (one power law through the IsoFLOP minima)
    n_boot: int = 1000                   # bootstrap draws for the intervals

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
        check_range("max_steps", self.max_steps, 0, None)
        if self.max_steps and self.max_steps < self.min_steps:
            raise ConfigError(f"config key 'max_steps' ({self.max_steps}) is below min_steps "
                              f"({self.min_steps}): every run would be skipped")
        check_range("skillmath_docs", self.skillmath_docs, 0, None)
        if self.skillmath_docs and self.corpus == "skillmath":
            raise ConfigError("config key 'skillmath_docs' adds SkillMath text to another corpus; "
                              "the corpus is already skillmath")
        check_range("eval_problems", self.eval_problems, 0, None)
        if self.eval_problems and self.corpus != "skillmath" and not self.skillmath_docs:
            raise ConfigError("config key 'eval_problems' needs SkillMath text in the pretraining "
                              "corpus (corpus: skillmath, or skillmath_docs > 0) so the answers "
                              "are learnable")
        check_range("eval_max_new_tokens", self.eval_max_new_tokens, 1, None)
        check_range("n_boot", self.n_boot, 10, None)
        check_choice("loss_forecast", self.loss_forecast, LOSS_FORECASTS)
        if self.heldout and len(self.budgets) < 3:
            raise ConfigError("config key 'heldout' needs at least 3 budgets (2 to fit, 1 to check)")
        if self.heldout and list(self.budgets).count(max(self.budgets)) > 1:
            raise ConfigError("config key 'budgets' repeats its largest budget; the held-out "
                              "budget must be one budget")


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


def plan_sweep(cfg: ScalingConfig, vocab_size: int,
               budgets: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Every (budget, size) with its tokens and steps; ``skip`` marks pairs below ``min_steps``
    (or above ``max_steps``). ``budgets`` replaces the config's."""
    tokens_per_step = cfg.seq_len * cfg.batch_size
    plan = []
    for b in (cfg.budgets if budgets is None else budgets):
        for s in cfg.sizes:
            n = size_params(s, vocab_size, cfg.param_count)
            steps = max(1, round(tokens_for_budget(b, n) / tokens_per_step))
            skip = steps < cfg.min_steps or bool(cfg.max_steps and steps > cfg.max_steps)
            plan.append({"budget": float(b), "size": s, "n_params": n, "steps": steps,
                         "tokens": steps * tokens_per_step, "skip": skip})
    return plan


def _skillmath_texts(seed: int, n_train: int, n_val: int) -> tuple[list[str], list[str]]:
    from reasonlab.data.skillmath import SkillMathConfig, generate, pretraining_texts

    splits = generate(SkillMathConfig(seed=seed, n_train=n_train, n_val=n_val, n_test=0,
                                      n_test_template=0, n_test_pair=0))
    return list(pretraining_texts(splits["train"])), list(pretraining_texts(splits["val"]))


def load_texts(cfg: ScalingConfig) -> tuple[list[str], list[str]]:
    """Training and validation documents (disjoint). With ``skillmath_docs`` that many SkillMath
    documents join the training set, and the validation set gets SkillMath documents in the same
    proportion; the documents are shuffled together."""
    if cfg.corpus == "skillmath":
        return _skillmath_texts(cfg.seed, cfg.n_train_docs, cfg.n_val_docs)
    from reasonlab.llama.corpus import load_corpus

    docs = load_corpus(cfg.corpus, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    docs = [docs[i] for i in rng.permutation(len(docs))]
    n_val = min(cfg.n_val_docs, max(1, len(docs) // 10))
    train, val = docs[n_val:n_val + cfg.n_train_docs], docs[:n_val]
    if cfg.skillmath_docs:
        sm_val = max(1, round(n_val * cfg.skillmath_docs / max(1, len(train))))
        sm_train, sm_val_docs = _skillmath_texts(cfg.seed, cfg.skillmath_docs, sm_val)
        train, val = train + sm_train, val + sm_val_docs
        train = [train[i] for i in rng.permutation(len(train))]
    return train, val


def eval_problems(cfg: ScalingConfig, train_texts: Sequence[str]) -> list:
    """``eval_problems`` one-step SkillMath problems whose question appears in no training
    document (the answer NLL and accuracy set)."""
    from reasonlab.data.skillmath import SkillMathConfig, format_prompt, sample_problems

    seen = set(train_texts)
    seen_prompts = {t.split("\nA: ", 1)[0] for t in seen if t.startswith("Q: ")}
    out: list = []
    pool = sample_problems(SkillMathConfig(seed=cfg.seed, k_weights=[1.0, 0.0, 0.0]),
                           4 * cfg.eval_problems, seed=f"scaling-eval-{cfg.seed}", prefix="ev")
    for p in pool:
        if format_prompt(p.question).split("\nA: ", 1)[0] not in seen_prompts:
            out.append(p)
        if len(out) == cfg.eval_problems:
            break
    if len(out) < cfg.eval_problems:
        raise ValueError(f"only {len(out)} one-step SkillMath problems are not in the training "
                         f"text; lower eval_problems ({cfg.eval_problems})")
    return out


def answer_eval(lm, problems: Sequence, *, max_new_tokens: int = 48, batch_size: int = 64
                ) -> dict[str, Any]:
    """Per-token NLL of each reference solution given its prompt (teacher-forced, averaged over
    all solution tokens) and greedy accuracy (the completion up to its first ``The answer is``
    line, graded by :func:`reasonlab.data.answers.check_answer`)."""
    from reasonlab.data.answers import check_answer
    from reasonlab.data.skillmath import format_prompt

    prompts = [format_prompt(p.question) for p in problems]
    scored = lm.score(prompts, [p.solution for p in problems], batch_size=batch_size)
    total = sum(-s.total for s in scored)
    n_tok = sum(s.num_tokens for s in scored)
    gens = lm.generate(prompts, max_new_tokens=max_new_tokens, temperature=0.0,
                       stop=["\nQ:", "\n\n"], batch_size=batch_size)
    correct = 0
    for p, g in zip(problems, gens):
        text = g.text
        cut = text.find("The answer is")
        if cut >= 0:
            end = text.find("\n", cut)
            text = text if end < 0 else text[:end]
        correct += bool(check_answer(text, p.answer, dataset="skillmath"))
    return {"answer_nll": total / max(1, n_tok), "accuracy": correct / len(problems),
            "n_correct": correct, "n_problems": len(problems), "answer_tokens": n_tok}


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


def _train_plan(cfg: ScalingConfig, run, budgets: Sequence[float] | None
                ) -> tuple[list[dict[str, Any]], list, int]:
    """Train (or read back) every run of the sweep at ``budgets`` (None: the config's) in
    ``run``'s folder: the points, the evaluation problems and the vocabulary size."""
    from reasonlab.llama.pretrain import PretrainConfig, pretrain
    from reasonlab.llama.tokenizer import load_or_train_tokenizer
    from reasonlab.runs import atomic_write_json, finished_results

    train_texts, val_texts = load_texts(cfg)
    tokenizer = load_or_train_tokenizer(run.path("tokenizer"), train_texts,
                                        vocab_size=cfg.vocab_size, digits=cfg.digits)
    vocab = len(tokenizer)
    problems = eval_problems(cfg, train_texts) if cfg.eval_problems else []
    plan = plan_sweep(cfg, vocab, budgets)
    todo = [p for p in plan if not p["skip"]]
    for p in plan:
        if p["skip"]:
            log.warning("skipping %s at C=%.3g: %d steps outside [min_steps %d, max_steps %s]",
                        p["size"], p["budget"], p["steps"], cfg.min_steps, cfg.max_steps or "-")
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
        if problems and res.get("answer_eval", {}).get("n_problems") != len(problems):
            from reasonlab.lm.load import load_lm

            ts = time.time()
            lm = load_lm(sub / res.get("model_dir", "model"), device=cfg.device, batch_size=64)
            res["answer_eval"] = answer_eval(lm, problems, max_new_tokens=cfg.eval_max_new_tokens)
            res["answer_eval"]["wall_s"] = round(time.time() - ts, 2)
            atomic_write_json(res_path, res)
        n = res["n_params_non_embedding"] if cfg.param_count == "non_embedding" else res["n_params"]
        point = {"budget": p["budget"], "size": p["size"], "n_params": n, "steps": p["steps"],
                 "tokens": res["train_tokens"], "flops": flops(n, res["train_tokens"]),
                 "val_loss": res["val_loss"], "wall_s": res.get("wall_s")}
        if "answer_eval" in res:
            point.update(answer_nll=res["answer_eval"]["answer_nll"],
                         accuracy=res["answer_eval"]["accuracy"])
        points.append(point)
        run.log(step=i, **point)
        log.info("[%d/%d] C=%.2e %-10s N=%.3g steps=%d val_loss=%.4f%s", i + 1, len(todo),
                 p["budget"], p["size"], n, p["steps"], res["val_loss"],
                 f" answer NLL {point['answer_nll']:.3f} acc {point['accuracy']:.3f}"
                 if "answer_nll" in point else "")

    return points, problems, vocab


def train_budget(cfg: ScalingConfig, out_dir: str | Path, budget: float) -> list[dict[str, Any]]:
    """The sweep's sizes trained at one more ``budget`` (those within ``min_steps`` and
    ``max_steps``), as points of the same form; resumable like the sweep."""
    from reasonlab.device import torch_threads
    from reasonlab.runs import Run

    check_range("budget", budget, 0.0, None, lo_open=True)
    with torch_threads(cfg.threads):
        run = Run(out_dir, cfg, cfg.seed, name="scaling")
        return _train_plan(cfg, run, [budget])[0]


def _run_scaling(cfg: ScalingConfig, out_dir: str | Path) -> dict[str, Any]:
    from reasonlab.runs import Run

    run = Run(out_dir, cfg, cfg.seed, name="scaling")
    t0 = time.time()
    points, problems, vocab = _train_plan(cfg, run, None)

    label = cfg.param_count.replace("_", "-")
    results = {"param_count": cfg.param_count, "budgets": [float(b) for b in cfg.budgets],
               "sizes": {s: size_params(s, vocab, cfg.param_count) for s in cfg.sizes}}
    report = _fit_report(cfg, points, cfg.budgets, run.path("isoflops.png"), label)
    results.update({k: v for k, v in report.items() if not k.startswith("_")})
    results["plot"] = "isoflops.png"
    if cfg.heldout:
        results["heldout"] = heldout_check(cfg, points, len(problems), run.path("forecast.png"))
        results["forecast_plot"] = "forecast.png" if results["heldout"].get("forecast") else None
    results.update({
        "points": points,
        "n_eval_problems": len(problems),
        "vocab_size": vocab,
        "seed": cfg.seed,
        "machine": _machine(),
        "wall_s": round(time.time() - t0, 1),
    })
    run.save_results(results)
    return results


def _fit_report(cfg: ScalingConfig, points: list[dict[str, Any]], budgets: Sequence[float],
                plot_path: Path | None, label: str) -> dict[str, Any]:
    """The IsoFLOP fit over ``budgets``' points: N*(C), D*(C) with bootstrap intervals."""
    pts = [p for p in points if p["budget"] in set(budgets)]
    extrapolated = False
    try:
        fits, law, excluded = fit_scaling(pts, strict=False, require_interior=cfg.require_interior)
    except ValueError as e:
        if not cfg.require_interior:
            raise
        # Fewer than two budgets have their minimum inside the sizes: fit them all, and say so.
        log.warning("%s; fitting every budget, extrapolated minima included", e)
        fits, law, excluded = fit_scaling(pts, strict=False, require_interior=False)
        extrapolated = True
    left_out = {e["budget"] for e in excluded}
    used = [f for f in fits if f.budget not in left_out]
    boot = bootstrap_isoflop([p for p in pts if p["budget"] not in left_out], n_boot=cfg.n_boot,
                             seed=cfg.seed, predict_at=cfg.predict_budget)
    if plot_path is not None:
        plot_isoflops(fits, law, plot_path, cfg.predict_budget, label)
    return {
        "alpha": law.alpha,
        "alpha_ci95": ci95(boot["alpha"]),
        "A": law.A,
        "r2": law.r2,
        "alpha_tokens": 1.0 - law.alpha,
        "alpha_tokens_ci95": ci95(1.0 - boot["alpha"]),
        "n_bootstrap": int(boot["alpha"].size),
        "optimal": [{"budget": f.budget, "n_opt": f.n_opt, "loss_opt": f.loss_opt,
                     "tokens_opt": tokens_for_budget(f.budget, f.n_opt), "interior": f.interior,
                     "parabola_r2": f.parabola.r2,
                     "in_fit": f.budget not in left_out} for f in fits],
        "n_budgets_fit": len(used),
        "fits": [f.to_dict() for f in fits],
        "excluded_budgets": excluded,
        "extrapolated_minima_in_fit": extrapolated or any(not f.interior for f in used),
        "prediction": {"budget": cfg.predict_budget, "n_opt": float(law(cfg.predict_budget)),
                       "n_opt_ci95": ci95(boot["n_opt"]),
                       "tokens_opt": law.tokens(cfg.predict_budget),
                       "tokens_opt_ci95": ci95(boot["tokens_opt"])},
        "_fits": fits, "_law": law, "_used": used,
    }


def _opt_value(fit: IsoFLOPFit, pts: list[dict[str, Any]], key: str) -> float:
    """``key`` (answer NLL) of a budget's compute-optimal model: a parabola of ``key`` against
    log10 N through the budget's models, read at log10 N* (clipped to the sizes); the nearest
    model's value when that parabola does not open upwards."""
    x = np.log10([p["n_params"] for p in pts])
    y = np.asarray([p[key] for p in pts], dtype=float)
    x_opt = float(np.clip(math.log10(fit.n_opt), x.min(), x.max()))
    par = fit_parabola(x, y)
    if par.convex:
        return float(par(x_opt))
    return float(y[int(np.argmin(np.abs(x - x_opt)))])


def loss_backtest(used: Sequence[IsoFLOPFit], points: list[dict[str, Any]], *,
                  seed: int = 0) -> list[dict[str, Any]]:
    """Each fitted budget from the third on, forecast from the budgets below it by both loss
    forecasts and compared with its own parabola minimum (relative errors)."""
    fits = sorted(used, key=lambda f: f.budget)
    rows = []
    for i in range(2, len(fits)):
        below, f = fits[:i], fits[i]
        row: dict[str, Any] = {"budget": f.budget, "fit_budgets": [g.budget for g in below],
                               "measured": f.loss_opt}
        law = fit_power_law([g.budget for g in below], [g.loss_opt for g in below])
        row["power_law"] = float(law(f.budget))
        try:
            row["envelope"] = envelope_forecast(
                [p for p in points if p["budget"] in {g.budget for g in below}], f.budget,
                seed=seed).value
        except ValueError:
            row["envelope"] = None
        for k in ("power_law", "envelope"):
            if row[k] is not None:
                row[f"{k}_rel_error"] = abs(row[k] - f.loss_opt) / f.loss_opt
        rows.append(row)
    return rows


def heldout_check(cfg: ScalingConfig, points: list[dict[str, Any]], n_problems: int,
                  plot_path: Path) -> dict[str, Any]:
    """Fit on every budget but the largest; forecast its compute-optimal loss, answer NLL and
    accuracy (the two-stage forecast); compare with what the held-out budget's runs measured (its
    own parabola minimum, and the answer NLL and accuracy of its lowest-loss model).

    The loss is forecast two ways, ``cfg.loss_forecast`` choosing the headline ``loss_predicted``:
    ``power_law``, one L*(C) power law through the fitted budgets' parabola minima; ``envelope``,
    each size's own loss-against-tokens power law read at the budget, the lowest of them
    (:func:`envelope_forecast`)."""
    c_h = max(cfg.budgets)
    fit_budgets = [b for b in cfg.budgets if b != c_h]
    rep = _fit_report(cfg, points, fit_budgets, None, "")
    used: list[IsoFLOPFit] = rep["_used"]
    cs = [f.budget for f in used]
    loss_law = fit_power_law(cs, [f.loss_opt for f in used])
    boot = bootstrap_isoflop([p for p in points if p["budget"] in set(cs)], n_boot=cfg.n_boot,
                             seed=cfg.seed, predict_at=c_h)
    held = [p for p in points if p["budget"] == c_h]
    out: dict[str, Any] = {
        "budget": c_h, "fit_budgets": cs,
        "alpha": rep["alpha"], "alpha_ci95": rep["alpha_ci95"],
        "n_opt_predicted": float(rep["_law"](c_h)), "n_opt_ci95": ci95(boot["n_opt"]),
        "loss_law": {"A": loss_law.A, "alpha": loss_law.alpha, "r2": loss_law.r2},
        "loss_method": cfg.loss_forecast,
        "power_law": {"loss_predicted": float(loss_law(c_h)), "loss_ci95": ci95(boot["loss_opt"])},
        "loss_measured": None, "n_opt_measured": None,
    }
    fit_pts = [p for p in points if p["budget"] in set(cs)]
    try:
        env = envelope_forecast(fit_pts, c_h, seed=cfg.seed)
        out["envelope"] = env.loss_dict()
        if n_problems:
            nll = envelope_forecast([p for p in fit_pts if p["size"] == env.size], c_h,
                                    key="answer_nll", seed=cfg.seed)
            out["envelope"]["nll_predicted"] = nll.value
    except ValueError as e:
        log.warning("no envelope forecast: %s", e)
        out["envelope"] = {"error": str(e)}
    out["backtest"] = loss_backtest(used, fit_pts, seed=cfg.seed)
    chosen = out[cfg.loss_forecast] if "loss_predicted" in out.get(cfg.loss_forecast, {}) \
        else out["power_law"]
    out.update(loss_predicted=chosen["loss_predicted"], loss_ci95=chosen["loss_ci95"])
    if len(held) >= 3:
        try:
            f_h = fit_isoflop(c_h, [p["n_params"] for p in held], [p["val_loss"] for p in held])
            out.update(loss_measured=f_h.loss_opt, n_opt_measured=f_h.n_opt,
                       measured_interior=f_h.interior)
        except ValueError as e:
            log.warning("held-out budget %.3g: %s; its measured loss is its best run's", c_h, e)
    if held and out["loss_measured"] is None:
        best = min(held, key=lambda p: p["val_loss"])
        out.update(loss_measured=best["val_loss"], n_opt_measured=best["n_params"])
    if held:
        best = min(held, key=lambda p: p["val_loss"])
        out["best_model"] = {k: best.get(k) for k in ("size", "n_params", "val_loss", "answer_nll",
                                                      "accuracy")}
    if out["loss_measured"] is not None:
        for d in (out, out["power_law"], out["envelope"]):
            if "loss_predicted" in d:
                d["loss_rel_error"] = abs(out["loss_measured"] - d["loss_predicted"]) / out["loss_measured"]
    if not n_problems:
        return out
    by_budget = {f.budget: f for f in used}
    nll_opt = [_opt_value(by_budget[b], [p for p in points if p["budget"] == b], "answer_nll")
               for b in cs]
    models = [p for p in points if p["budget"] in set(cs)]
    try:
        nll_law, sig, fc = two_stage_forecast(
            cs, nll_opt, [p["answer_nll"] for p in models], [p["accuracy"] for p in models],
            n_problems, c_h, n_boot=cfg.n_boot, seed=cfg.seed)
    except ValueError as e:
        log.warning("no two-stage forecast: %s", e)
        out["forecast_error"] = str(e)
        return out
    out.update(forecast=fc.to_dict(), nll_opt=dict(zip(map(str, cs), nll_opt)),
               nll_law={"A": nll_law.A, "alpha": nll_law.alpha, "r2": nll_law.r2},
               sigmoid={"k": sig.k, "x0": sig.x0})
    if "nll_predicted" in out["envelope"]:
        out["envelope"]["accuracy_predicted"] = float(sig(out["envelope"]["nll_predicted"]))
    m = out.get("best_model") or {}
    if m.get("accuracy") is not None:
        lo, hi = fc.accuracy_ci95
        out.update(nll_measured=m["answer_nll"], accuracy_measured=m["accuracy"],
                   accuracy_in_ci95=bool(lo <= m["accuracy"] <= hi))
    plot_forecast(cs, nll_opt, nll_law, [p["answer_nll"] for p in models],
                  [p["accuracy"] for p in models], sig, fc, plot_path,
                  measured_nll=m.get("answer_nll"), measured_accuracy=m.get("accuracy"))
    return out
