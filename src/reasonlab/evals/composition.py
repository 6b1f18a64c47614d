"""The composition law checked on known skills: skill-pair success against single-skill success.

MATH² (Shah et al. 2024, arXiv:2407.21009, §4 "the composition relationship") observes across
models that accuracy Y on questions needing two skills tracks X², X the accuracy on questions
needing one. SkillMath knows every problem's skills, so the law can be checked directly:

- per model: per-skill success ``s_i`` (1-skill problems of skill i), per ordered pair success
  ``y_ij`` (2-skill problems whose chain is i then j) against the independence prediction
  ``s_i * s_j`` (:func:`pair_table`; Pearson correlation over pairs with enough problems);
- across models (the herd): ``Y = X**e`` fitted by least squares on ``log Y = e log X``
  (through the origin: a model with X = 1 has Y = 1), with a 95% bootstrap interval that
  resamples every model's problems (:func:`fit_exponent`). e = 2 is the MATH² law for
  independent skills; e > 2 means pairs are harder than independence predicts.

The pure functions take per-problem records (``{"skills": [...], "correct": [bool, ...]}``, as
:func:`reasonlab.evals.accuracy.score_problem` writes them) and return plain numbers;
:func:`run_composition` reads model folders built by the solver recipes
(``eval_predictions.jsonl``), writes ``composition.json``, a text table and two plots.
No public code is compared against: the paper's analysis is a scatter plot and a fitted curve,
reproduced here on problems whose skills are known.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from reasonlab.config import ConfigError, check_range

Record = dict[str, Any]


def _hit(rec: Record) -> float:
    """Per-problem success: mean correctness of its samples (greedy: 0 or 1)."""
    if "correct" in rec:
        c = rec["correct"]
        return sum(map(bool, c)) / len(c) if c else 0.0
    return rec["n_correct"] / rec["k"]


def per_skill_accuracy(records: Iterable[Record]) -> dict[str, tuple[float, int]]:
    """``skill -> (accuracy, n)`` over one-skill problems."""
    acc: dict[str, list[float]] = {}
    for r in records:
        if len(r["skills"]) == 1:
            acc.setdefault(r["skills"][0], []).append(_hit(r))
    return {s: (sum(v) / len(v), len(v)) for s, v in sorted(acc.items())}


def pair_accuracy(records: Iterable[Record]) -> dict[tuple[str, str], tuple[float, int]]:
    """``(first, second) -> (accuracy, n)`` over two-skill problems (the first feeds the second)."""
    acc: dict[tuple[str, str], list[float]] = {}
    for r in records:
        if len(r["skills"]) == 2:
            acc.setdefault((r["skills"][0], r["skills"][1]), []).append(_hit(r))
    return {p: (sum(v) / len(v), len(v)) for p, v in sorted(acc.items())}


def k_accuracy(records: Iterable[Record], k: int) -> tuple[float | None, int]:
    """Accuracy over problems with ``k`` skills, and their number."""
    hits = [_hit(r) for r in records if len(r["skills"]) == k]
    return (sum(hits) / len(hits) if hits else None), len(hits)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None with fewer than 3 points or no spread."""
    n = len(x)
    if n < 3:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / math.sqrt(sxx * syy)


def pair_table(records: Sequence[Record], min_n: int = 3) -> list[dict[str, Any]]:
    """One row per ordered pair with at least ``min_n`` problems and both skills measured:
    observed ``y`` and predicted ``s_i * s_j``."""
    skills = per_skill_accuracy(records)
    rows = []
    for (a, b), (y, n) in pair_accuracy(records).items():
        if n >= min_n and a in skills and b in skills:
            rows.append({"pair": f"{a}>{b}", "n": n, "y": y,
                         "predicted": skills[a][0] * skills[b][0]})
    return rows


def _clip(p: float, n: int) -> float:
    """Keep a proportion off 0 and 1 (half a problem) so its logarithm exists."""
    lo = 0.5 / max(n, 1)
    return min(max(p, lo), 1.0 - lo)


def exponent(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares ``e`` of ``log y = e log x`` (through the origin); None if undefined."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    den = sum(a * a for a in lx)
    return sum(a * b for a, b in zip(lx, ly)) / den if den > 0 else None


def fit_exponent(models: Sequence[tuple[Sequence[float], Sequence[float]]], *, n_boot: int = 2000,
                 seed: int = 0) -> dict[str, Any]:
    """Fit ``Y = X**e`` across models from each model's per-problem successes on one-skill
    (X) and two-skill (Y) problems; 95% interval by resampling each model's problems."""
    pts = [(list(a), list(b)) for a, b in models if a and b]
    if len(pts) < 1:
        return {"exponent": None, "ci95": [None, None], "n_models": 0, "points": []}

    def xy(sample: Sequence[tuple[list[float], list[float]]]) -> tuple[list[float], list[float]]:
        xs = [_clip(sum(a) / len(a), len(a)) for a, _ in sample]
        ys = [_clip(sum(b) / len(b), len(b)) for _, b in sample]
        return xs, ys

    xs, ys = xy(pts)
    e = exponent(xs, ys)
    rng = random.Random(seed)
    boots = []
    for _ in range(n_boot):
        sample = [([rng.choice(a) for _ in a], [rng.choice(b) for _ in b]) for a, b in pts]
        eb = exponent(*xy(sample))
        if eb is not None:
            boots.append(eb)
    boots.sort()
    ci = ([boots[int(0.025 * (len(boots) - 1))], boots[int(0.975 * (len(boots) - 1))]]
          if boots else [None, None])
    return {"exponent": e, "ci95": ci, "n_models": len(pts),
            "points": [{"X": sum(a) / len(a), "Y": sum(b) / len(b), "n1": len(a), "n2": len(b)}
                       for a, b in pts]}


def analyze(models: dict[str, Sequence[Record]], *, min_pair_n: int = 3, n_boot: int = 2000,
            seed: int = 0) -> dict[str, Any]:
    """The whole analysis over named models' per-problem records (test problems, 1-3 skills)."""
    per_model: dict[str, Any] = {}
    all_pred, all_y = [], []
    for name, recs in models.items():
        rows = pair_table(recs, min_pair_n)
        all_pred += [r["predicted"] for r in rows]
        all_y += [r["y"] for r in rows]
        per_model[name] = {
            "per_skill": {s: a for s, (a, _) in per_skill_accuracy(recs).items()},
            "X": k_accuracy(recs, 1)[0], "Y": k_accuracy(recs, 2)[0],
            "pairs": rows,
            "pair_corr": pearson([r["predicted"] for r in rows], [r["y"] for r in rows]),
        }
    fit = fit_exponent([([_hit(r) for r in recs if len(r["skills"]) == 1],
                         [_hit(r) for r in recs if len(r["skills"]) == 2])
                        for recs in models.values()], n_boot=n_boot, seed=seed)
    return {"models": per_model, "pair_corr": pearson(all_pred, all_y), "n_pair_points": len(all_y),
            "composition_exponent": fit["exponent"], "composition_exponent_ci95": fit["ci95"],
            "herd_points": dict(zip(models, fit["points"])) if fit["points"] else {},
            "min_pair_n": min_pair_n}


# --------------------------------------------------------------------------- runner


@dataclass
class CompositionConfig:
    """Which models to analyze (recipe names or model folders holding eval_predictions.jsonl)."""

    models: list[str] = field(default_factory=lambda: ["herd-xs", "herd-s", "herd-m", "herd-l"])
    sets: list[str] = field(default_factory=lambda: ["test_k1", "test_k2"])
    min_pair_n: int = 3
    n_boot: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("config key 'models' is empty; give recipe names or model folders")
        check_range("min_pair_n", self.min_pair_n, 1, 10**6)
        check_range("n_boot", self.n_boot, 0, 10**6)


def read_predictions(model_dir: str | Path, sets: Sequence[str]) -> list[Record]:
    """The per-problem records a solver recipe kept (``eval_predictions.jsonl``) for ``sets``."""
    from reasonlab.models import PREDICTIONS_FILE
    from reasonlab.runs import read_jsonl

    p = Path(model_dir) / PREDICTIONS_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: the model was not built by a solver recipe with "
                                "an evaluation")
    return [r for r in read_jsonl(p) if r.get("set") in sets]


def plot_composition(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """pairs.png (pair success vs s_i*s_j, every model) and herd.png (Y vs X with the fit)."""
    from reasonlab.plots import pyplot, save_figure

    plt = pyplot()
    paths = []
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, m in result["models"].items():
        ax.scatter([r["predicted"] for r in m["pairs"]], [r["y"] for r in m["pairs"]], s=14,
                   label=name, alpha=0.8)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("s_i * s_j (one-skill successes)")
    ax.set_ylabel("pair success")
    r = result["pair_corr"]
    ax.set_title(f"skill pairs (r = {r:.2f})" if r is not None else "skill pairs")
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out_dir / "pairs.png"))
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    pts = result["herd_points"]
    ax.scatter([p["X"] for p in pts.values()], [p["Y"] for p in pts.values()], color="C0")
    for name, p in pts.items():
        ax.annotate(name, (p["X"], p["Y"]), fontsize=7)
    grid = [i / 100 for i in range(1, 101)]
    ax.plot(grid, [g ** 2 for g in grid], "k--", lw=0.8, label="Y = X^2")
    e = result["composition_exponent"]
    if e is not None:
        ax.plot(grid, [g ** e for g in grid], "C1", label=f"fit Y = X^{e:.2f}")
    ax.set_xlabel("X: one-skill accuracy")
    ax.set_ylabel("Y: two-skill accuracy")
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out_dir / "herd.png"))
    return paths


def format_composition(result: dict[str, Any]) -> str:
    """A text table: per model X, Y, per-skill success and pair correlation; then the fit."""
    lines = []
    skills = sorted({s for m in result["models"].values() for s in m["per_skill"]})
    head = ["model", "X", "Y", "pair r"] + skills
    rows = [head]
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for name, m in result["models"].items():
        rows.append([name, f(m["X"]), f(m["Y"]), f(m["pair_corr"])]
                    + [f(m["per_skill"].get(s)) for s in skills])
    w = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        lines.append("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))
    lo, hi = result["composition_exponent_ci95"]
    lines.append(f"composition exponent e (Y = X^e): {f(result['composition_exponent'])} "
                 f"[{f(lo)}, {f(hi)}]; pair correlation (all models): {f(result['pair_corr'])} "
                 f"over {result['n_pair_points']} pairs")
    return "\n".join(lines) + "\n"


def run_composition(cfg: CompositionConfig, out_dir: str | Path) -> dict[str, Any]:
    """Analyze the configured models into ``out_dir`` (composition.json, table, plots)."""
    from reasonlab.models.cache import resolve_model
    from reasonlab.runs import Run, atomic_write_text

    out = Path(out_dir)
    run = Run(out, cfg, cfg.seed, name="composition")
    models = {spec: read_predictions(resolve_model(spec), cfg.sets) for spec in cfg.models}
    result = analyze(models, min_pair_n=cfg.min_pair_n, n_boot=cfg.n_boot, seed=cfg.seed)
    result["plots"] = [p.name for p in plot_composition(result, out)]
    atomic_write_text(out / "composition_table.txt", format_composition(result))
    run.save_results(result)
    return result
