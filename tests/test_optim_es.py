"""Meta-training by antithetic ES: determinism, process parallelism, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from reasonlab.optim.envs import EnvSpec
from reasonlab.optim.es import ESConfig, MetaTrainConfig, es_step_plan, meta_train
from reasonlab.optim.inner import Evaluator, OptSpec, Task
from reasonlab.optim.l3rs import L3RSConfig, MetaModel

TINY_ENV = {"batch_size": 32, "hidden": [16], "pretrain_steps": 30}


def tiny_cfg(steps: int = 4, **es) -> MetaTrainConfig:
    return MetaTrainConfig(
        seed=3, env=EnvSpec("digits", TINY_ENV),
        l3rs=L3RSConfig(directions=["sgd", "adam", "sign"], time_scales=[5.0, 20.0]),
        es=ESConfig(steps=steps, pairs=2, horizon=20, train_seeds=[0, 1, 2], workers=1, **es))


def test_step_plan_is_pure_and_antithetic_pairs_share_seeds():
    cfg = tiny_cfg()
    e1, s1 = es_step_plan(cfg, 5, 10)
    e2, s2 = es_step_plan(cfg, 5, 10)
    e3, _ = es_step_plan(cfg, 6, 10)
    assert np.array_equal(e1, e2) and s1 == s2 and not np.array_equal(e1, e3)
    assert set(s1) <= {0, 1, 2} and len(set(s1)) == len(s1)


def test_meta_training_is_deterministic_and_resumes(tmp_path):
    cfg = tiny_cfg(steps=4)
    a = meta_train(cfg, tmp_path / "a", progress=False)
    b = meta_train(cfg, tmp_path / "b", progress=False, max_steps=2)  # "killed" after 2 steps
    assert (tmp_path / "b" / "checkpoints" / "es_state.json").exists()
    assert not (tmp_path / "b" / "results.json").exists()
    b = meta_train(cfg, tmp_path / "b", progress=False)  # resumed
    assert np.array_equal(a.theta.numpy(), b.theta.numpy())
    assert np.any(a.theta.numpy() != 0)
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["inner_runs"] == 4 * 2 * 2 and res["n_meta_params"] == a.size
    assert (tmp_path / "a" / "meta_training.png").stat().st_size > 1000
    loaded = MetaModel.load(tmp_path / "a" / "meta.safetensors")
    assert np.array_equal(loaded.theta.numpy(), a.theta.numpy())


def test_pool_of_processes_gives_the_serial_numbers(tmp_path):
    cfg = tiny_cfg(steps=2)
    serial = meta_train(cfg, tmp_path / "serial", progress=False)
    with Evaluator(2) as ev:
        par = meta_train(cfg, tmp_path / "par", progress=False, evaluator=ev)
        # and plain inner runs: same order, same numbers
        meta = MetaModel(cfg.l3rs, 4)
        tasks = [Task(cfg.env, OptSpec.from_meta(meta), s, 15) for s in (0, 1, 2)]
        pooled = [r["mean_loss"] for r in ev.map(tasks)]
    assert np.array_equal(serial.theta.numpy(), par.theta.numpy())
    with Evaluator(1) as ev1:
        assert [r["mean_loss"] for r in ev1.map(tasks)] == pooled


def test_es_lowers_the_meta_objective(tmp_path):
    """A short ES run on a short horizon beats its own starting point on the training seeds."""
    cfg = MetaTrainConfig(
        seed=0, env=EnvSpec("digits", TINY_ENV),
        l3rs=L3RSConfig(directions=["sgd", "adam"], base_lr=0.002, state_features=False,
                        time_scales=[10.0]),
        es=ESConfig(steps=15, pairs=4, sigma=0.1, lr=0.1, horizon=30, train_seeds=[0, 1, 2, 3],
                    workers=1))
    meta = meta_train(cfg, tmp_path / "m", progress=False)
    with Evaluator(1) as ev:
        def mean_loss(m):
            return np.mean([r["mean_loss"] for r in ev.map(
                [Task(cfg.env, OptSpec.from_meta(m), s, 30) for s in range(4)])])
        start, end = mean_loss(MetaModel(cfg.l3rs, 4)), mean_loss(meta)
    assert end < 0.8 * start


def test_killed_cli_meta_training_resumes_from_its_last_step(tmp_path):
    """SIGKILL a real `reasonlab optimizer meta-train` mid-run, then resume it."""
    sets = ["es.steps=30", "es.pairs=2", "es.horizon=20", "es.workers=1", "es.train_seeds=[0,1]",
            "env.options.batch_size=32", "env.options.hidden=[16]",
            "env.options.pretrain_steps=30", "l3rs.time_scales=[5.0]"]
    args = [sys.executable, "-m", "reasonlab.cli", "optimizer", "meta-train", "--no-progress"]
    for s in sets:
        args += ["--set", s]
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args + ["--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    metrics, state_file = out / "metrics.jsonl", out / "checkpoints" / "es_state.json"

    def checkpointed_step() -> int:  # the state file is written atomically after each metrics line
        return json.loads(state_file.read_text())["step"] if state_file.exists() else 0

    deadline = time.time() + 120
    while time.time() < deadline and checkpointed_step() < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= checkpointed_step() < 30
    subprocess.run(args + ["--out", str(out)], env=env, check=True, capture_output=True)
    from reasonlab.config import load_config

    uninterrupted = meta_train(load_config(MetaTrainConfig, None, sets), tmp_path / "full",
                               progress=False)
    resumed = MetaModel.load(out / "meta.safetensors")
    assert np.array_equal(resumed.theta.numpy(), uninterrupted.theta.numpy())
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert steps == list(range(30))


def test_validation_objective_uses_held_out_batches(tmp_path):
    import pytest

    from reasonlab.optim.inner import meta_objective, run_inner

    env = EnvSpec("digits", {**TINY_ENV, "val_fraction": 0.25})
    spec = OptSpec("adam", {"lr": 0.05})
    r = run_inner(Task(env, spec, 0, 20, objective="val_mean", val_every=5))
    plain = run_inner(Task(env, spec, 0, 20))
    assert r["mean_loss"] == plain["mean_loss"]  # the held-out batches do not touch training
    assert r["val_mean"] != r["mean_loss"] and r["val_final"] > 0
    assert meta_objective(r, "val_final") == pytest.approx(np.log(r["val_final"]))
    with pytest.raises(ValueError, match="held-out"):
        meta_objective(plain, "val_mean")
    with pytest.raises(ValueError, match="val_fraction"):
        run_inner(Task(EnvSpec("digits", TINY_ENV), spec, 0, 5, objective="val_final"))
    # the validation split is carved out of the training split, never out of the test split
    from reasonlab.optim.envs import make_env

    a, b = make_env(env), make_env(EnvSpec("digits", TINY_ENV))
    assert len(a.y_test) == len(b.y_test) and len(a.y_train) + len(a.y_val) == len(b.y_train)
    # ES on the held-out objective takes other steps than on the training loss
    cfg = tiny_cfg(steps=2, objective="val_final", val_every=5)
    cfg.env = env
    val = meta_train(cfg, tmp_path / "val", progress=False)
    cfg_train = tiny_cfg(steps=2)
    cfg_train.env = env
    train = meta_train(cfg_train, tmp_path / "train", progress=False)
    assert not np.array_equal(val.theta.numpy(), train.theta.numpy())
    assert json.loads((tmp_path / "val" / "results.json").read_text())["objective"] == "val_final"


def test_a_finished_meta_training_is_not_rewritten(tmp_path):
    """Calling meta_train on a finished run returns its meta-parameters and writes nothing, so
    the folder's identity (which a comparison run records) stays the same."""
    from reasonlab.runs import input_identity

    cfg = tiny_cfg(steps=2)
    a = meta_train(cfg, tmp_path / "a", progress=False)
    before = input_identity(tmp_path / "a")
    again = meta_train(cfg, tmp_path / "a", progress=False)
    assert input_identity(tmp_path / "a") == before
    assert np.array_equal(a.theta.numpy(), again.theta.numpy())
