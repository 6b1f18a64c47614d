"""Meta-training under ``torchrun --nproc_per_node=2`` (gloo): the ranks share the antithetic
pairs of every ES step and reach the single process's meta-parameters; it resumes as one
process does."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from reasonlab.config import load_config
from reasonlab.optim.es import MetaTrainConfig, meta_train
from reasonlab.optim.l3rs import MetaModel

pytestmark = pytest.mark.distributed

SETS = ["seed=5", "es.steps=3", "es.pairs=3", "es.horizon=12", "es.workers=1",
        "es.train_seeds=[0,1,2]", "env.options.batch_size=32", "env.options.hidden=[8]",
        "env.options.pretrain_steps=10", "l3rs.time_scales=[5.0]",
        "l3rs.directions=[sgd,adam]"]


def _torchrun(out, extra=()):
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "reasonlab.cli", "optimizer", "meta-train", "--no-progress", "--out", str(out),
            *extra]
    for s in SETS:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_torchrun_two_ranks_equal_the_single_process_and_resume(tmp_path):
    single = meta_train(load_config(MetaTrainConfig, None, SETS), tmp_path / "single",
                        progress=False)
    _torchrun(tmp_path / "dist", ["--max-steps", "2"])  # stopped after 2 of 3 steps
    assert json.loads((tmp_path / "dist" / "checkpoints" / "es_state.json").read_text())["step"] == 2
    _torchrun(tmp_path / "dist")  # resumed
    dist = MetaModel.load(tmp_path / "dist" / "meta.safetensors")
    assert np.any(single.theta.numpy() != 0)
    assert np.array_equal(dist.theta.numpy(), single.theta.numpy())
    res = json.loads((tmp_path / "dist" / "results.json").read_text())
    assert res["world_size"] == 2
    rows = [json.loads(x) for x in (tmp_path / "dist" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
