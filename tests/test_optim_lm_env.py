"""The language-model environment: a cached herd model (micro variant) fine-tuned on a SkillMath
skill outside its six, through the same inner-run and ES code as digits."""

from __future__ import annotations

import math

import pytest
import torch

from reasonlab.config import ConfigError
from reasonlab.optim.envs import EnvSpec, Environment, make_env
from reasonlab.optim.inner import OptSpec, Task, run_inner

LM = {"micro": True, "skill": "avg", "n_train": 16, "n_val": 8, "n_test": 8, "batch_size": 4,
      "max_new_tokens": 24}


def test_config_rejects_a_skill_the_herd_knows():
    with pytest.raises(ConfigError, match="skill"):
        EnvSpec("lm", {"skill": "add"})
    with pytest.raises(ConfigError, match="batch_size"):
        EnvSpec("lm", {**LM, "batch_size": 64})


def test_lm_environment_fine_tunes_on_solution_tokens():
    spec = EnvSpec("lm", LM)
    env = make_env(spec)
    assert isinstance(env, Environment)
    assert all(p.skills == ["avg"] for p in env.train + env.test)
    assert not {p.question for p in env.train} & {p.question for p in env.test}
    batch = next(env.batches(0))
    lab = batch["labels"]
    # the loss covers solution tokens only: the prompt (question) positions carry -100
    assert (lab[:, :4] == -100).all() and (lab != -100).any()
    # same seed, same model and batches; the seed orders the data
    assert torch.equal(next(env.batches(3))["input_ids"], next(env.batches(3))["input_ids"])
    a, b = env.make_model(0), env.make_model(1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    acc = env.test_accuracy(a)
    assert 0.0 <= acc <= 1.0
    r0 = run_inner(Task(spec, OptSpec("adam", {"lr": 3e-3}), 0, 6, curve=True))
    assert math.isfinite(r0["test_loss"]) and 0.0 <= r0["test_acc"] <= 1.0
    assert r0["losses"][-1] < r0["losses"][0]  # fine-tuning lowers the training loss
    assert r0["test_loss"] < env.test_loss(env.make_model(0))  # and the held-out loss
