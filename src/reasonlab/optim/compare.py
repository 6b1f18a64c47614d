"""Side-by-side comparison of learned optimizers against tuned baselines.

1. Every baseline is tuned by grid search on the meta-training seeds and objective (mean log of
   the mean training loss) with the same number of inner runs as one meta-training used.
2. Every optimizer (tuned baselines and learned meta-parameter files) runs on the same held-out
   seeds in each setting: the meta-training environment, unseen initializations (checkpoints
   from another pretraining recipe), unseen data-set variants and a 3× longer horizon.
3. Per setting, each learned optimizer is compared with the best baseline (lowest mean training
   loss): relative loss reduction, test-accuracy delta in points and a paired Wilcoxon
   signed-rank test over seeds. The run directory gets ``table.md``, ``results.json`` and loss
   curves (``curves_<setting>.png``). Finished stages are kept, so a killed comparison resumes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from reasonlab.config import ConfigError, check_choice, check_range
from reasonlab.optim.baselines import BASELINES, search_grid
from reasonlab.optim.envs import EnvSpec
from reasonlab.optim.es import load_meta_run
from reasonlab.optim.inner import OBJECTIVES, Evaluator, OptSpec, Task, meta_objective
from reasonlab.runs import Run, atomic_write_json, atomic_write_text, input_identity, read_json

log = logging.getLogger(__name__)

SETTINGS = ("main", "unseen_init", "shift", "noise", "split", "long3x")
LM_SETTINGS = ("main", "unseen_skill", "long3x")  # the language-model environment's


@dataclass
class CompareConfig:
    seed: int = 0
    env: EnvSpec = field(default_factory=EnvSpec)
    horizon: int = 100
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    tune_budget: int = 0  # inner runs per baseline; 0: what the reference meta-training used
    tune_seeds: list[int] = field(default_factory=lambda: list(range(8)))
    test_seeds: list[int] = field(default_factory=lambda: list(range(1000, 1016)))
    learned: dict[str, str] = field(default_factory=dict)  # label -> meta run dir or file
    reference: str = ""  # the learned optimizer whose budget the baselines get; "": the first
    settings: list[str] = field(default_factory=lambda: list(SETTINGS))
    workers: int = 2
    objective: str = "train"  # what the baselines are tuned on (as es.objective): train | val_*
    unseen_skill: str = "perim"  # the language-model environment's unseen skill

    def __post_init__(self) -> None:
        check_choice("objective", self.objective, OBJECTIVES)
        for b in self.baselines:
            check_choice("baselines", b, BASELINES)
        for s in self.settings:
            check_choice("settings", s, LM_SETTINGS if self.env.name == "lm" else SETTINGS)
        check_range("horizon", self.horizon, 1)
        check_range("tune_budget", self.tune_budget, 0)
        check_range("workers", self.workers, 1, 64)
        if len(self.test_seeds) < 2:
            raise ConfigError("config key 'test_seeds' needs at least 2 seeds")
        if set(self.test_seeds) & set(self.tune_seeds):
            raise ConfigError(f"config key 'test_seeds' = {self.test_seeds} and config key "
                              f"'tune_seeds' = {self.tune_seeds} must not overlap (both hold "
                              f"{sorted(set(self.test_seeds) & set(self.tune_seeds))})")
        if not self.learned:
            raise ConfigError("config key 'learned' must name at least one meta run (label: path)")
        if not self.reference:
            self.reference = next(iter(self.learned))
        if self.reference not in self.learned:
            raise ConfigError(f"config key 'reference' = {self.reference!r} is not a key of "
                              f"config key 'learned' ({sorted(self.learned)})")


def setting_env(env: EnvSpec, horizon: int, setting: str, unseen_skill: str = "perim"
                ) -> tuple[EnvSpec, int]:
    """The environment and horizon of a generalization setting."""
    if setting == "main":
        return env, horizon
    if setting == "unseen_skill":
        return env.with_options(skill=unseen_skill), horizon
    if setting == "unseen_init":
        return env.with_options(pretrain_recipe="sgd_long"), horizon
    if setting in ("shift", "noise", "split"):
        return env.with_options(variant=setting), horizon
    if setting == "long3x":
        return env, 3 * horizon
    raise ValueError(f"unknown setting '{setting}'")


def tune_baseline(name: str, env: EnvSpec, horizon: int, seeds: list[int], budget: int,
                  ev: Evaluator, progress: bool = True, objective: str = "train") -> dict[str, Any]:
    """Grid search with at most ``budget`` inner runs; the winner minimizes the mean over
    ``seeds`` of the meta-training objective (log of the mean training loss, or of the held-out
    loss for the validation objectives)."""
    grid = search_grid(name, max(1, budget // len(seeds)))
    tasks = [Task(env, OptSpec(name, hp), s, horizon, objective=objective)
             for hp in grid for s in seeds]
    res = ev.map(tasks, desc=f"tune {name}", progress=progress)
    scores = []
    for i, hp in enumerate(grid):
        rs = res[i * len(seeds):(i + 1) * len(seeds)]
        scores.append(float(np.mean([meta_objective(r, objective) for r in rs])))
    best = int(np.argmin(scores))
    return {"hparams": grid[best], "objective": scores[best], "n_configs": len(grid),
            "inner_runs": len(tasks),
            "grid": [{"hparams": hp, "objective": sc} for hp, sc in zip(grid, scores)]}


def paired_stats(ours: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, Any]:
    """Loss reduction (fraction), accuracy delta (points) and two-sided Wilcoxon signed-rank
    p-values, paired by seed: of the per-seed mean training losses (``wilcoxon_p``) and of the
    test accuracies (``acc_wilcoxon_p``)."""
    from scipy.stats import wilcoxon

    a = np.array([r["mean_loss"] for r in ours])
    b = np.array([r["mean_loss"] for r in base])
    acc_a = np.array([r["test_acc"] for r in ours])
    acc_b = np.array([r["test_acc"] for r in base])
    ok = ~(np.isnan(acc_a) | np.isnan(acc_b))  # a diverged run has no accuracy

    def p_value(x: np.ndarray, y: np.ndarray) -> float:
        return float(wilcoxon(x, y).pvalue) if np.any(x != y) else 1.0

    extra = {}
    if all("test_loss" in r for r in ours + base):
        ta = np.array([r["test_loss"] for r in ours])
        tb = np.array([r["test_loss"] for r in base])
        ok_l = ~(np.isnan(ta) | np.isnan(tb))
        extra = {"test_loss_reduction": float(1 - np.nanmean(ta) / np.nanmean(tb)),
                 "test_loss_wilcoxon_p": p_value(ta[ok_l], tb[ok_l])}
    return {**extra, "train_loss_reduction": float(1 - a.mean() / b.mean()),
            "test_acc_delta": float(100 * (np.nanmean(acc_a) - np.nanmean(acc_b))),
            "wilcoxon_p": p_value(a, b), "acc_wilcoxon_p": p_value(acc_a[ok], acc_b[ok]),
            "wins": int((a < b).sum()), "n": len(a)}


def summarize(results: dict[str, list[dict[str, Any]]], baselines: list[str],
              learned: list[str]) -> dict[str, Any]:
    """Per-optimizer means and each learned optimizer against the best baseline (and each)."""
    per = {}
    for name, rs in results.items():
        losses = np.array([r["mean_loss"] for r in rs])
        per[name] = {"mean_train_loss": float(losses.mean()),
                     "sem_train_loss": float(losses.std(ddof=1) / math.sqrt(len(losses))),
                     "final_train_loss": float(np.mean([r["final_loss"] for r in rs])),
                     "test_acc": float(100 * np.nanmean([r["test_acc"] for r in rs])),
                     "diverged": int(sum(r["diverged"] for r in rs))}
        if all("test_loss" in r for r in rs):  # environments with a held-out loss
            per[name]["test_loss"] = float(np.nanmean([r["test_loss"] for r in rs]))
    best = min(baselines, key=lambda b: per[b]["mean_train_loss"])
    vs = {name: {"vs_best": paired_stats(results[name], results[best]),
                 "vs": {b: paired_stats(results[name], results[b]) for b in baselines}}
          for name in learned}
    return {"optimizers": per, "best_baseline": best, "learned": vs}


def _plot(setting: str, results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    from reasonlab.plots import pyplot, save_figure

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, rs in results.items():
        curve = np.mean([r["losses"] for r in rs], axis=0)
        ls = "-" if name in BASELINES else "--"
        ax.plot(np.arange(len(curve)), curve, ls, label=name, lw=1.4)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over seeds)")
    ax.set_title(f"setting: {setting}")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=120)


def format_table(summary: dict[str, Any], learned: list[str]) -> str:
    """A markdown table: one row per setting and learned optimizer, plus each optimizer's means."""
    lines = ["| setting | optimizer | mean train loss | test acc % | vs best baseline | "
             "loss reduction | acc delta (pts) | Wilcoxon p |",
             "|---|---|---|---|---|---|---|---|"]
    for setting, s in summary.items():
        best = s["best_baseline"]
        for name, st in s["optimizers"].items():
            if name in learned:
                v = s["learned"][name]["vs_best"]
                extra = (f"{best} | {100 * v['train_loss_reduction']:+.1f}% | "
                         f"{v['test_acc_delta']:+.2f} | {v['wilcoxon_p']:.2g}")
            else:
                extra = "(best)" + " | | | " if name == best else " | | | "
            lines.append(f"| {setting} | {name} | {st['mean_train_loss']:.4f} "
                         f"± {st['sem_train_loss']:.4f} | {st['test_acc']:.2f} | {extra} |")
    return "\n".join(lines) + "\n"


def run_compare(cfg: CompareConfig, out: str | Path, *, evaluator: Evaluator | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Tune, evaluate, summarize; resumable per stage (tuning per baseline, eval per setting)."""
    learned_files = {label: Path(p) / "meta.safetensors" if Path(p).is_dir() else p
                     for label, p in cfg.learned.items()}
    run = Run(out, cfg, seed=cfg.seed, name="l3rs-compare",
              identity={"learned": {k: input_identity(v) for k, v in learned_files.items()}})
    metas = {label: load_meta_run(path) for label, path in cfg.learned.items()}
    budget = cfg.tune_budget
    if budget == 0:
        ref = Path(cfg.learned[cfg.reference])
        res_path = ref / "results.json" if ref.is_dir() else ref.parent / "results.json"
        if not res_path.exists():
            raise FileNotFoundError(f"tune_budget=0 needs the meta run's {res_path}; "
                                    "finish the meta-training or set tune_budget")
        budget = int(read_json(res_path)["inner_runs"])
    own = evaluator is None
    ev = evaluator or Evaluator(cfg.workers)
    try:
        tuning_path = run.path("tuning.json")
        tuning = read_json(tuning_path) if tuning_path.exists() else {}
        for b in cfg.baselines:
            if b not in tuning:
                tuning[b] = tune_baseline(b, cfg.env, cfg.horizon, cfg.tune_seeds, budget, ev,
                                          progress, cfg.objective)
                atomic_write_json(tuning_path, tuning)
                log.info("tuned %s: %s", b, tuning[b]["hparams"])
        specs = {b: OptSpec(b, tuning[b]["hparams"]) for b in cfg.baselines}
        specs.update({label: OptSpec.from_meta(m) for label, m in metas.items()})
        summary = {}
        for setting in tqdm(cfg.settings, desc="settings", disable=not progress):
            path = run.path(f"eval_{setting}.json")
            if path.exists():
                results = read_json(path)
            else:
                env, horizon = setting_env(cfg.env, cfg.horizon, setting, cfg.unseen_skill)
                tasks = [Task(env, spec, s, horizon, curve=True)
                         for spec in specs.values() for s in cfg.test_seeds]
                res = ev.map(tasks, desc=f"eval {setting}", progress=progress)
                n = len(cfg.test_seeds)
                results = {name: res[i * n:(i + 1) * n] for i, name in enumerate(specs)}
                atomic_write_json(path, results)
                run.log(step=None, setting=setting, **{
                    f"{k}_loss": float(np.mean([r["mean_loss"] for r in v]))
                    for k, v in results.items()})
            _plot(setting, results, run.path(f"curves_{setting}.png"))
            summary[setting] = summarize(results, cfg.baselines, list(metas))
    finally:
        if own:
            ev.close()
    table = format_table(summary, list(metas))
    atomic_write_text(run.path("table.md"), table)
    out_res = {"tune_budget": budget, "tuned": {b: tuning[b]["hparams"] for b in cfg.baselines},
               "meta": {k: m.describe() for k, m in metas.items()}, "settings": summary}
    run.save_results(out_res)
    return out_res
