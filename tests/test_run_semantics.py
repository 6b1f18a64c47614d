"""Run directories never mix or lose work: the whole job is recorded and compared on resume, a
finished run rerun is a no-op, ``--overwrite`` starts fresh, and bad values fail before any file
is written."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from typer.testing import CliRunner

from reasonlab.cli import app
from reasonlab.config import load_config
from reasonlab.llama.jobs import PretrainJob, run_pretrain_job
from reasonlab.runs import RunConfigMismatch

runner = CliRunner()

TINY = ["train.preset=tiny-0.5m", "train.seq_len=64", "train.batch_size=4", "train.max_steps=3",
        "train.warmup_steps=1", "train.eval_every=3", "train.eval_batches=1",
        "train.checkpoint_every=3", "train.log_every=1", "train.device=cpu",
        "tokenizer.vocab_size=300", "val_fraction=0.1"]


def _corpus(path, n=40, offset=0):
    docs = [f"Tom has {i + offset} apples and buys {i % 7} more. The answer is {i + offset + i % 7}."
            for i in range(n)]
    path.write_text("\n\n".join(docs) + "\n")
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _job(corpus, *extra):
    return load_config(PretrainJob, None, TINY + [f"corpus={corpus}", *extra])


def test_rerun_with_another_job_is_refused_naming_every_difference(tmp_path, caplog):
    a = _corpus(tmp_path / "a.txt")
    b = _corpus(tmp_path / "b.txt", offset=100)
    out = tmp_path / "run"
    first = run_pretrain_job(_job(a), out)
    rec = json.loads((out / "config.json").read_text())
    # The whole job is recorded: every section, the data set's and the tokenizer's identity.
    assert rec["config"]["corpus"] == str(a) and rec["config"]["tokenizer"]["vocab_size"] == 300
    assert rec["config"]["train"]["max_steps"] == 3 and rec["config"]["val_fraction"] == 0.1
    assert len(rec["identity"]["data"]["sha256"]) == 64 and rec["identity"]["data"]["items"] == 40
    results_before = (out / "results.json").read_bytes()
    weights = out / "model" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns

    with pytest.raises(RunConfigMismatch) as e:
        run_pretrain_job(_job(b, "limit=30", "val_fraction=0.2"), out)
    msg = str(e.value)
    assert f"corpus: '{a}' there, '{b}' now" in msg
    assert "limit: 0 there, 30 now" in msg and "val_fraction: 0.1 there, 0.2 now" in msg
    assert "identity.data.sha256" in msg and "--overwrite" in msg and "\n" not in msg
    with pytest.raises(RunConfigMismatch, match=r"tokenizer.vocab_size: 300 there, 320 now"):
        run_pretrain_job(_job(a, "tokenizer.vocab_size=320"), out)
    # The same corpus path with other contents is another data set.
    _corpus(a, offset=7)
    with pytest.raises(RunConfigMismatch, match=r"identity.data.sha256"):
        run_pretrain_job(_job(a), out)
    _corpus(a)

    # A finished run rerun is a no-op that says so: results and weights untouched.
    with caplog.at_level(logging.INFO, logger="reasonlab.llama.jobs"):
        again = run_pretrain_job(_job(a), out)
    assert "already finished" in caplog.text
    assert again == first and first["val_loss"] is not None
    assert (out / "results.json").read_bytes() == results_before
    assert weights.stat().st_mtime_ns == mtime

    # --overwrite starts fresh with the new job.
    fresh = run_pretrain_job(_job(b, "tokenizer.vocab_size=320"), out, overwrite=True)
    rec = json.loads((out / "config.json").read_text())
    assert rec["config"]["corpus"] == str(b) and rec["config"]["tokenizer"]["vocab_size"] == 320
    assert fresh["val_loss"] is not None and fresh["val_loss"] != first["val_loss"]
    tok = json.loads((out / "tokenizer" / "tokenizer.json").read_text())
    assert len(tok["model"]["vocab"]) + len(tok["added_tokens"]) <= 320
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(1) == 1  # the old run's lines are gone


def test_a_run_that_failed_before_its_first_step_is_reusable(tmp_path):
    a = _corpus(tmp_path / "a.txt")
    out = tmp_path / "run"
    # A start that failed after writing its record and tokenizer, before any step.
    with pytest.raises(RuntimeError, match="boom"):
        from reasonlab.llama import pretrain as P

        orig = P.Trainer.fit

        def boom(self):
            raise RuntimeError("boom")

        P.Trainer.fit = boom
        try:
            run_pretrain_job(_job(a, "tokenizer.vocab_size=300"), out)
        finally:
            P.Trainer.fit = orig
    assert (out / "config.json").exists() and (out / "tokenizer" / "tokenizer.json").exists()
    # The corrected command (another vocab size) uses the same directory, with a new tokenizer.
    res = run_pretrain_job(_job(a, "tokenizer.vocab_size=320"), out)
    assert res["steps"] == 3
    rec = json.loads((out / "config.json").read_text())
    assert rec["config"]["tokenizer"]["vocab_size"] == 320
    from reasonlab.llama.tokenizer import load_tokenizer

    assert len(load_tokenizer(out / "tokenizer")) > 300


@pytest.mark.parametrize("bad,needle", [
    ("train.preset=tiny-9m", "unknown preset 'tiny-9m'"),
    ("train.device=gpu0", "'train.device' = 'gpu0' is not a device"),
    ("train.lr=.nan", "train.lr' = nan is not a finite number"),
    ("train.grad_clip=.inf", "train.grad_clip' = inf is not a finite number"),
    ("train.micro_batch_size=3", "'train.batch_size' = 4 is not a multiple of config key "
                                 "'train.micro_batch_size' = 3"),
])
def test_bad_values_fail_before_anything_is_written(tmp_path, bad, needle):
    a = _corpus(tmp_path / "a.txt")
    out = tmp_path / "run"
    args = ["pretrain", "--out", str(out)]
    for s in TINY + [f"corpus={a}", bad]:
        args += ["--set", s]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_cli_overwrite_flag_and_refusal_message(tmp_path):
    a = _corpus(tmp_path / "a.txt")
    out = tmp_path / "run"
    base = ["pretrain", "--out", str(out)]
    for s in TINY + [f"corpus={a}"]:
        base += ["--set", s]
    assert runner.invoke(app, base).exit_code == 0
    r = runner.invoke(app, base + ["--set", "train.lr=0.002"])
    assert r.exit_code == 2 and "train.lr: None there, 0.002 now" in r.output
    assert "--overwrite" in r.output and "overwrite=True" not in r.output
    r = runner.invoke(app, base + ["--set", "train.lr=0.002", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["config"]["train"]["lr"] == 0.002
