"""Inner training runs and the process pool that runs many of them.

An inner run fine-tunes an environment's model for one seed with one optimizer (:class:`OptSpec`,
a picklable recipe: a baseline with hyper-parameters, or L3RS with a meta-parameter vector) and
reports the mean training loss over the unroll, the final loss and the test accuracy. Runs are
pure functions of (environment, optimizer, seed, steps) on one thread, so a pool of worker
processes gives the same numbers as a serial loop, in the same order.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from reasonlab.optim.baselines import build_baseline
from reasonlab.optim.envs import EnvSpec, make_env, one_thread
from reasonlab.optim.l3rs import L3RS, L3RSConfig, MetaModel

OBJECTIVES = ("train", "val_mean", "val_final")
LOSS_CAP = 5.0  # a step's loss counts at most LOSS_CAP × the initial loss; beyond it: diverged


@dataclass
class OptSpec:
    """``kind`` is ``"l3rs"`` (with ``l3rs`` config dict, ``n_layers`` and ``theta``), ``"lopt"``
    (the general per-parameter MLP learned optimizer: its config dict in ``l3rs`` and ``theta``)
    or the name of a baseline (with ``hparams``)."""

    kind: str
    hparams: dict[str, Any] = field(default_factory=dict)
    l3rs: dict[str, Any] | None = None
    n_layers: int = 0
    theta: Any = None

    @classmethod
    def from_meta(cls, meta: Any, theta: Any = None) -> "OptSpec":
        """The learned optimizer of ``meta`` (an L3RS ``MetaModel`` or an ``LOptModel``) with its
        parameters (or the vector ``theta`` in its layout)."""
        theta = meta.theta.numpy().copy() if theta is None else np.asarray(theta, np.float64)
        if not isinstance(meta, MetaModel):
            return cls("lopt", l3rs=dataclasses.asdict(meta.config), theta=theta)
        return cls("l3rs", l3rs=dataclasses.asdict(meta.config), n_layers=meta.n_layers,
                   theta=theta)

    def build(self, params: Any, horizon: int) -> tuple[torch.optim.Optimizer, Any]:
        if self.kind == "l3rs":
            meta = MetaModel(L3RSConfig(**self.l3rs), self.n_layers, self.theta)
            return L3RS(params, meta, horizon=horizon), None
        if self.kind == "lopt":
            from reasonlab.optim.lopt import LOptConfig, LOptModel, MLPLOpt

            return MLPLOpt(params, LOptModel(LOptConfig(**self.l3rs), self.theta)), None
        return build_baseline(self.kind, params, self.hparams, horizon)


@dataclass
class Task:
    env: EnvSpec
    opt: OptSpec
    seed: int
    steps: int
    curve: bool = False  # keep the per-step losses
    timing: bool = False  # time each step
    evaluate: bool = True  # test accuracy / loss at the end (timing runs skip them)
    objective: str = "train"  # val_*: also measure the loss on held-out batches
    val_every: int = 10  # steps between held-out evaluations (and one at the end)


def run_inner(task: Task) -> dict[str, Any]:
    """Fine-tune for ``task.steps`` steps on one thread; the loss of each step is that of the
    batch it used."""
    with one_thread():
        return _run_inner(task)


def _run_inner(task: Task) -> dict[str, Any]:
    env = make_env(task.env)
    torch.manual_seed(task.seed)
    model = env.make_model(task.seed)
    opt, sched = task.opt.build(model.named_parameters() if task.opt.kind == "l3rs"
                                else model.parameters(), task.steps)
    batches = env.batches(task.seed)
    losses = np.empty(task.steps)
    cap, diverged, t_step, t_opt = math.inf, False, 0.0, 0.0
    c_step, c_opt = 0.0, 0.0  # the same in this thread's CPU time (immune to other jobs' load)
    val = task.objective != "train"
    val_batches = env.val_batches(task.seed) if val else None
    val_losses: list[float] = []
    for t in range(task.steps):
        batch = next(batches)
        t0, c0 = time.perf_counter(), time.thread_time()
        opt.zero_grad(set_to_none=True)
        loss = env.loss(model, batch)
        loss.backward()
        lv = float(loss.detach())
        if t == 0:
            cap = LOSS_CAP * lv
        if not math.isfinite(lv) or lv > cap:
            losses[t:] = cap
            diverged = True
            break
        losses[t] = lv
        t1, c1 = time.perf_counter(), time.thread_time()
        if isinstance(opt, L3RS):
            opt.step(loss=lv)
        else:
            opt.step()
        t_opt += time.perf_counter() - t1
        c_opt += time.thread_time() - c1
        if sched is not None:
            sched.step()
        t_step += time.perf_counter() - t0
        c_step += time.thread_time() - c0
        if val and ((t + 1) % task.val_every == 0 or t + 1 == task.steps):
            val_losses.append(_held_out_loss(env, model, next(val_batches), cap))
    out: dict[str, Any] = {
        "mean_loss": float(losses.mean()), "final_loss": float(losses[-1]),
        "test_acc": float("nan") if diverged or not task.evaluate else env.test_accuracy(model),
        "diverged": diverged, "seed": task.seed,
    }
    if hasattr(env, "test_loss") and task.evaluate:  # environments with a held-out loss report it beside accuracy
        out["test_loss"] = float("nan") if diverged else float(env.test_loss(model))
    if val:  # a diverged run counts its missing evaluations at the cap
        n_eval = len(range(task.val_every - 1, task.steps, task.val_every)) + (
            task.steps % task.val_every != 0)
        val_losses += [cap] * (n_eval - len(val_losses))
        out["val_mean"] = float(np.mean(val_losses))
        out["val_final"] = float(val_losses[-1])
    if task.curve:
        out["losses"] = losses.tolist()
    if task.timing:  # wall seconds per step: the whole step, and the optimizer's part
        out["step_time_s"] = t_step / task.steps
        out["opt_time_s"] = t_opt / task.steps
        out["step_cpu_s"] = c_step / task.steps  # thread CPU time
        out["opt_cpu_s"] = c_opt / task.steps
    return out


@torch.no_grad()
def _held_out_loss(env: Any, model: torch.nn.Module, batch: Any, cap: float) -> float:
    """The loss on one held-out batch, capped like the training loss (a diverged value counts
    as the cap)."""
    v = float(env.loss(model, batch))
    return v if math.isfinite(v) and v <= cap else cap


def meta_objective(result: dict[str, Any], objective: str = "train") -> float:
    """What ES minimizes (and baselines are tuned on): the log (scale-free across seeds) of the
    mean training loss over the unroll, or of the held-out loss averaged along the unroll
    (``val_mean``) or at its end (``val_final``)."""
    key = {"train": "mean_loss", "val_mean": "val_mean", "val_final": "val_final"}[objective]
    if key not in result:
        raise ValueError(f"objective '{objective}' needs inner runs with held-out losses "
                         f"(Task(objective='{objective}'))")
    return math.log(max(result[key], 1e-12))


def _init_worker() -> None:
    torch.set_num_threads(1)


def step_times(env: EnvSpec, specs: dict[str, OptSpec], steps: int = 100, repeats: int = 15,
               seed: int = 0) -> dict[str, dict[str, float]]:
    """Wall time per training step (and per ``optimizer.step``) of each optimizer on the same
    model and batches, in this process on one thread. The optimizers take turns, and each
    figure is the fastest of ``repeats`` runs (``*_median`` the median): the least disturbed by
    load from elsewhere on the machine. ``*_cpu_s``: the same in this thread's CPU time, which
    time spent waiting for a core on a loaded machine does not inflate."""
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in specs}
    for spec in specs.values():  # warm-up (pretraining, caches)
        run_inner(Task(env, spec, seed, min(steps, 10), evaluate=False))
    for _ in range(repeats):
        for name, spec in specs.items():
            r = run_inner(Task(env, spec, seed, steps, timing=True, evaluate=False))
            times[name].append((r["step_time_s"], r["opt_time_s"], r["step_cpu_s"],
                                r["opt_cpu_s"]))
    out = {}
    for k, v in times.items():
        step, opt, step_cpu, opt_cpu = np.array(v).T
        out[k] = {"step_s": float(step.min()), "optimizer_step_s": float(opt.min()),
                  "step_s_median": float(np.median(step)),
                  "optimizer_step_s_median": float(np.median(opt)),
                  "step_cpu_s": float(step_cpu.min()),
                  "optimizer_step_cpu_s": float(opt_cpu.min())}
    return out


class Evaluator:
    """Runs :class:`Task` lists serially (``workers <= 1``) or on a pool of spawned processes.

    Results come back in task order, identical either way. Use as a context manager.
    """

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))
        self._pool = None

    def __enter__(self) -> "Evaluator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def map(self, tasks: Sequence[Task], desc: str | None = None,
            progress: bool = False) -> list[dict[str, Any]]:
        bar = tqdm(total=len(tasks), desc=desc, leave=False, disable=not progress)
        out: list[dict[str, Any]] = []
        if self.workers == 1:
            for t in tasks:
                out.append(run_inner(t))
                bar.update()
        else:
            if self._pool is None:
                self._pool = mp.get_context("spawn").Pool(self.workers, initializer=_init_worker)
            for r in self._pool.imap(run_inner, tasks, chunksize=1):
                out.append(r)
                bar.update()
        bar.close()
        return out
