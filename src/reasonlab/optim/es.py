"""Meta-training L3RS by antithetic evolution strategies (as ``learned_optimization``'s full_es).

Each ES step draws ``pairs`` Gaussian directions ε and inner-training seeds from a generator
seeded by (seed, step), runs the inner problem at θ ± σε (the two members of a pair share the
seed: common random numbers), and feeds the estimate

    ĝ = Σ_i (f(θ+σε_i) − f(θ−σε_i)) ε_i / (2σ·pairs)

to Adam on θ. f is the log of the mean training loss over the unroll (``es.objective="train"``),
or of the loss on held-out batches along the unroll (``"val_mean"``) or at its end
(``"val_final"``). The runs of a step go to a process pool; the numbers do not depend on the
number of workers. Under ``torchrun`` (torch.distributed, gloo) each rank runs its share of the
antithetic pairs and the fitness values are all-gathered, so every rank takes the same ES step as
one process would (:class:`DistEvaluator`). After every step the ES state is written atomically to
the run directory (by rank 0), so a killed meta-training resumes from the last step.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from reasonlab.config import ConfigError, check_choice, check_range
from reasonlab.optim.envs import EnvSpec, make_env, one_thread
from reasonlab.optim.inner import OBJECTIVES, Evaluator, OptSpec, Task, meta_objective
from reasonlab.optim.l3rs import L3RSConfig, MetaModel, count_rows
from reasonlab.optim.lopt import FORMAT as LOPT_FORMAT
from reasonlab.optim.lopt import LOptConfig, LOptModel
from reasonlab.plots import plot_metric_curves
from reasonlab.runs import Run, atomic_write_json, read_json

log = logging.getLogger(__name__)


@dataclass
class ESConfig:
    steps: int = 150
    pairs: int = 8
    sigma: float = 0.1
    lr: float = 0.03  # Adam on the meta-parameters
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    horizon: int = 100  # inner steps per run
    train_seeds: list[int] = field(default_factory=lambda: list(range(8)))
    workers: int = 2
    objective: str = "train"  # train | val_mean | val_final (held-out loss along / at the end)
    horizons: list[int] = field(default_factory=list)  # a distribution of horizons; []: horizon
    val_every: int = 10  # inner steps between held-out evaluations (objective val_mean)

    def __post_init__(self) -> None:
        check_choice("es.objective", self.objective, OBJECTIVES)
        check_range("es.val_every", self.val_every, 1)
        check_range("es.steps", self.steps, 1)
        check_range("es.pairs", self.pairs, 1)
        check_range("es.sigma", self.sigma, 0.0, None, lo_open=True)
        check_range("es.lr", self.lr, 0.0, None, lo_open=True)
        check_range("es.horizon", self.horizon, 1)
        check_range("es.workers", self.workers, 1, 64)
        for h in self.horizons:
            check_range("es.horizons", h, 1)
        if not self.train_seeds:
            raise ConfigError("config key 'es.train_seeds' must list at least one seed")

    @property
    def inner_runs(self) -> int:
        """Inner training runs one meta-training uses (the budget baselines are tuned with)."""
        return self.steps * self.pairs * 2


@dataclass
class MetaTrainConfig:
    seed: int = 0
    env: EnvSpec = field(default_factory=EnvSpec)
    l3rs: L3RSConfig = field(default_factory=L3RSConfig)
    es: ESConfig = field(default_factory=ESConfig)
    learner: str = "l3rs"  # l3rs | lopt (the general per-parameter MLP learned optimizer)
    lopt: LOptConfig = field(default_factory=LOptConfig)
    # a distribution of tasks: each antithetic pair draws one of env + extra_envs
    extra_envs: list[EnvSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_choice("learner", self.learner, ("l3rs", "lopt"))

    @property
    def envs(self) -> list[EnvSpec]:
        return [self.env, *self.extra_envs]


class DistEvaluator:
    """Runs this rank's share of a task list (whole antithetic pairs: pair i goes to rank
    i mod world) on a local :class:`Evaluator` and all-gathers the results over the
    torch.distributed group, so every rank gets the full list in task order."""

    def __init__(self, local: Evaluator):
        import torch.distributed as dist

        self.local = local
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def map(self, tasks: list[Task], desc: str | None = None,
            progress: bool = False) -> list[dict]:
        import torch.distributed as dist

        mine = [i for i in range(len(tasks)) if (i // 2) % self.world == self.rank]
        res = self.local.map([tasks[i] for i in mine])
        gathered: list[list] = [None] * self.world  # type: ignore[list-item]
        dist.all_gather_object(gathered, list(zip(mine, res)))
        out: list[dict] = [None] * len(tasks)  # type: ignore[list-item]
        for part in gathered:
            for i, r in part:
                out[i] = r
        return out

    def close(self) -> None:
        self.local.close()


def join_process_group() -> tuple[int, int]:
    """(rank, world size): joins the gloo process group when launched by torchrun with
    WORLD_SIZE > 1 (or uses one that is already set up); (0, 1) otherwise."""
    import torch.distributed as dist

    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        dist.init_process_group(backend="gloo")
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def count_layers(env: EnvSpec, seed: int, config: L3RSConfig | None = None) -> int:
    """The meta-model rows an L3RS ``config`` needs for ``env``'s model (one per tensor by
    default)."""
    named = make_env(env).make_model(seed).named_parameters()
    return count_rows(config or L3RSConfig(), named)


def es_step_plan(cfg: MetaTrainConfig, step: int, dim: int) -> tuple[np.ndarray, list[int]]:
    """The perturbations [pairs, dim] and inner seeds of ES step ``step`` (pure in (seed, step))."""
    rng = np.random.default_rng([cfg.seed, step])
    eps = rng.standard_normal((cfg.es.pairs, dim))
    pool = cfg.es.train_seeds
    seeds = [pool[i % len(pool)] for i in rng.permutation(max(cfg.es.pairs, len(pool)))]
    return eps, [int(s) for s in seeds[:cfg.es.pairs]]


def es_task_plan(cfg: MetaTrainConfig, step: int) -> tuple[list[EnvSpec], list[int]]:
    """The environment and horizon of each pair of ES step ``step``: drawn from ``env`` +
    ``extra_envs`` and ``es.horizons`` (pure in (seed, step)); the fixed ones without a pool."""
    envs, hs = cfg.envs, cfg.es.horizons or [cfg.es.horizon]
    rng = np.random.default_rng([cfg.seed, step, 1])
    ei = rng.integers(0, len(envs), cfg.es.pairs) if len(envs) > 1 else [0] * cfg.es.pairs
    hi = rng.integers(0, len(hs), cfg.es.pairs) if len(hs) > 1 else [0] * cfg.es.pairs
    return [envs[i] for i in ei], [int(hs[i]) for i in hi]


def initial_meta(cfg: MetaTrainConfig) -> Any:
    """The learner's meta-model at its initial parameters."""
    if cfg.learner == "lopt":
        return LOptModel(cfg.lopt)
    return MetaModel(cfg.l3rs, count_layers(cfg.env, cfg.es.train_seeds[0], cfg.l3rs))


def meta_train(cfg: MetaTrainConfig, out: str | Path, *, evaluator: Evaluator | None = None,
               progress: bool = True, max_steps: int | None = None) -> MetaModel:
    """Meta-train into run directory ``out`` (resumed if it holds the same config).

    ``max_steps`` stops after that many ES steps in this call (a stand-in for a kill in tests).
    Writes ``meta.safetensors`` (the learned meta-parameters), ``metrics.jsonl`` (one line per ES
    step), ``checkpoints/es_state.json``, ``meta_training.png`` and ``results.json``.
    Under torchrun (or inside an initialized torch.distributed group) the ranks share the inner
    runs of every step and rank 0 writes the files; the result equals one process's.
    """
    rank, world = join_process_group()
    if rank == 0:
        run = Run(out, cfg, seed=cfg.seed, name="l3rs-meta-train")
    _barrier(world)
    if rank != 0:  # the directory is rank 0's: the others only read it
        run = Run(out, cfg, seed=cfg.seed, name="l3rs-meta-train")
    if run.finished("meta.safetensors"):  # done: touch nothing (later runs hash this folder)
        return load_meta_run(run.dir)
    es = cfg.es
    meta = initial_meta(cfg)
    state_path = run.checkpoint_dir / "es_state.json"
    if state_path.exists():
        st = read_json(state_path)
        theta, m, v = (np.array(st[k], dtype=np.float64) for k in ("theta", "m", "v"))
        start = int(st["step"])
        if rank == 0:
            run.truncate_metrics(start - 1)
        log.info("resuming meta-training at ES step %d/%d", start, es.steps)
    else:
        theta, m, v = meta.theta.numpy().copy(), np.zeros(meta.size), np.zeros(meta.size)
        start = 0
    own = evaluator is None
    ev = evaluator or Evaluator(es.workers)
    if world > 1:
        ev = DistEvaluator(ev)
    b1, b2 = es.betas
    end = es.steps if max_steps is None else min(es.steps, start + max_steps)
    bar = tqdm(range(start, end), desc="ES", initial=start, total=es.steps,
               disable=not progress or rank != 0)
    try:
        for k in bar:
            eps, seeds = es_step_plan(cfg, k, meta.size)
            envs, horizons = es_task_plan(cfg, k)
            tasks = []
            for e, s, env, h in zip(eps, seeds, envs, horizons):
                for sign in (1.0, -1.0):
                    tasks.append(Task(env, OptSpec.from_meta(meta, theta + sign * es.sigma * e),
                                      s, h, objective=es.objective, val_every=es.val_every))
            res = ev.map(tasks)
            f = np.array([meta_objective(r, es.objective) for r in res])
            fp, fm = f[0::2], f[1::2]
            grad = ((fp - fm)[:, None] * eps).sum(0) / (2 * es.sigma * es.pairs)
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad ** 2
            mhat, vhat = m / (1 - b1 ** (k + 1)), v / (1 - b2 ** (k + 1))
            theta = theta - es.lr * mhat / (np.sqrt(vhat) + 1e-8)
            mean_loss = float(np.mean([r["mean_loss"] for r in res]))
            if rank == 0:
                run.log(step=k, objective=float(f.mean()), mean_loss=mean_loss,
                        grad_norm=float(np.linalg.norm(grad)),
                        theta_norm=float(np.linalg.norm(theta)),
                        diverged=int(sum(r["diverged"] for r in res)))
                atomic_write_json(state_path, {"step": k + 1, "theta": theta, "m": m, "v": v})
            bar.set_postfix(loss=f"{mean_loss:.4f}")
    finally:
        bar.close()
        if own:
            ev.close()
    meta = meta.with_theta(theta)
    done = end >= es.steps
    if rank != 0:
        _barrier(world)  # wait for rank 0's files
        return meta
    meta.save(run.path("meta.safetensors"), extra={"es_step": end, "done": done,
                                                   "inner_runs": 2 * es.pairs * end})
    if done and cfg.learner == "lopt":
        plot_metric_curves(run.metrics(), ["mean_loss"], run.path("meta_training.png"),
                           title="ES population mean of the inner training loss", log_y=True)
        run.save_results({"meta_file": "meta.safetensors", "es_steps": es.steps,
                          "inner_runs": es.inner_runs, **meta.describe(),
                          "final_objective": run.metrics()[-1]["objective"],
                          "objective": es.objective, "world_size": world,
                          "n_envs": len(cfg.envs), "horizons": es.horizons or [es.horizon]})
    elif done:
        plot_metric_curves(run.metrics(), ["mean_loss"], run.path("meta_training.png"),
                           title="ES population mean of the inner training loss", log_y=True)
        plot_schedule(meta, cfg.env, es.train_seeds[0], es.horizon, run.path("schedule.png"))
        run.save_results({"meta_file": "meta.safetensors", "es_steps": es.steps,
                          "inner_runs": es.inner_runs, **meta.describe(),
                          "final_objective": run.metrics()[-1]["objective"],
                          "objective": es.objective, "world_size": world})
    _barrier(world)
    return meta


def trace_coefficients(meta: MetaModel, env: EnvSpec, seed: int, steps: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """λ [steps, n] and μ [steps, n, P] that the learned optimizer uses along one inner run."""
    from reasonlab.optim.l3rs import L3RS

    e = make_env(env)
    lams, mus = [], []
    with one_thread():
        model = e.make_model(seed)
        opt = L3RS(model.named_parameters(), meta, horizon=steps)
        batches = e.batches(seed)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = e.loss(model, next(batches))
            loss.backward()
            opt.step(loss=float(loss.detach()))
            lam, mu = opt.last_coefficients
            lams.append(lam.numpy().copy())
            mus.append(mu.numpy().copy())
    return np.array(lams), np.array(mus)


def plot_schedule(meta: MetaModel, env: EnvSpec, seed: int, steps: int, path: Path) -> None:
    """Plot the learned per-layer step sizes and mixing weights along one inner run."""
    from reasonlab.plots import pyplot, save_figure

    plt = pyplot()

    lam, mu = trace_coefficients(meta, env, seed, steps)
    names = [n for n, _ in make_env(env).make_model(seed).named_parameters()]
    dirs = meta.config.directions
    fig, axes = plt.subplots(1, 1 + len(dirs), figsize=(3.2 * (1 + len(dirs)), 3.2),
                             squeeze=False)
    for i, n in enumerate(names):
        axes[0, 0].plot(lam[:, i], label=n)
        for j in range(len(dirs)):
            axes[0, 1 + j].plot(mu[:, i, j], label=n)
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_title("step size λ")
    for j, d in enumerate(dirs):
        axes[0, 1 + j].set_title(f"mix weight μ[{d}]")
        axes[0, 1 + j].set_ylim(0, 1)
    for ax in axes[0]:
        ax.set_xlabel("step")
    axes[0, 0].legend(fontsize=6)
    save_figure(fig, path, dpi=110)


def load_meta_run(path: str | Path) -> Any:
    """The meta-model (L3RS ``MetaModel`` or general ``LOptModel``) of a finished run directory,
    or a meta-parameter file itself."""
    from safetensors import safe_open

    p = Path(path)
    f = p / "meta.safetensors" if p.is_dir() else p
    if f.is_file():
        with safe_open(str(f), framework="pt") as h:
            if (h.metadata() or {}).get("format") == LOPT_FORMAT:
                return LOptModel.load(f)
    return MetaModel.load(f)
