"""The same pretraining entry point under ``torchrun --nproc_per_node=2`` (gloo, CPU) with DDP and
FSDP2 reaches the same weights as one process on the same global batches."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from reasonlab.data.skillmath import SkillMathConfig, pretraining_texts, sample_problems

pytestmark = pytest.mark.distributed

ARGS = ["--set", "corpus=corpus.jsonl", "--set", "train.preset=tiny-0.5m", "--set", "train.max_steps=4",
        "--set", "train.warmup_steps=1",
        "--set", "train.batch_size=8", "--set", "train.seq_len=64", "--set", "train.checkpoint_every=4",
        "--set", "train.device=cpu", "--set", "tokenizer.vocab_size=300", "--set", "train.eval_every=4"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    texts = pretraining_texts(sample_problems(SkillMathConfig(), 200, seed=5, k=1))
    (d / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    subprocess.run([sys.executable, "-m", "reasonlab.cli", "pretrain", "--out", "single", *ARGS,
                    "--set", "train.distributed=none"], cwd=d, check=True, capture_output=True)
    return d


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_torchrun_two_processes_match_single_process(workdir, mode):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "reasonlab.cli", "pretrain", "--out", mode, *ARGS, "--set", f"train.distributed={mode}"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = load_file(str(workdir / "single" / "model" / "model.safetensors"))
    dist = load_file(str(workdir / mode / "model" / "model.safetensors"))
    assert single.keys() == dist.keys()
    for k in single:
        torch.testing.assert_close(dist[k], single[k], rtol=1e-4, atol=2e-5, msg=k)
    res = json.loads((workdir / mode / "results.json").read_text())
    assert res["steps"] == 4 and res["n_params"] == json.loads((workdir / "single" / "results.json").read_text())["n_params"]


def test_fsdp2_on_one_device_under_torchrun_matches_single_process(workdir):
    """FSDP2 asked for explicitly with one process (the GPU check's one-device case) shards and
    still reaches the single-process weights."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "reasonlab.cli", "pretrain", "--out", "fsdp1", *ARGS, "--set", "train.distributed=fsdp"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = load_file(str(workdir / "single" / "model" / "model.safetensors"))
    one = load_file(str(workdir / "fsdp1" / "model" / "model.safetensors"))
    for k in single:
        torch.testing.assert_close(one[k], single[k], rtol=1e-4, atol=2e-5, msg=k)
