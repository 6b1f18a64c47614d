"""Bad input fails at once with a message naming it; run directories are atomic and resumable."""

import json

import pytest
from typer.testing import CliRunner

from reasonlab.cli import app
from reasonlab.config import ConfigError, load_config
from reasonlab.llama.jobs import PretrainJob
from reasonlab.runs import Run, RunConfigMismatch, atomic_write_json, read_jsonl

runner = CliRunner()


def test_unknown_key_lists_known_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_stepz'.*max_steps"):
        load_config(PretrainJob, overrides=["train.max_stepz=3"])


@pytest.mark.parametrize("override,needle", [
    ("train.lr=-1", "'train.lr' = -1.0 is out of range"),
    ("train.warmup_steps=1.5", "'train.warmup_steps' must be an integer"),
    ("train.distributed=mpi", "'train.distributed' = 'mpi' is not one of"),
    ("val_fraction=0.9", "'val_fraction' = 0.9 is out of range"),
    ("tokenizer.digits=pairs", "not one of ['single', 'groups3', 'none']"),
])
def test_out_of_range_values_fail_at_load(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(PretrainJob, overrides=[override])
    assert needle in str(e.value)


def test_yaml_file_and_overrides_merge(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("corpus: data.txt\ntrain:\n  max_steps: 7\n  warmup_steps: 1\n  seq_len: 64\n")
    job = load_config(PretrainJob, f, ["train.seq_len=32"])
    assert (job.corpus, job.train.max_steps, job.train.seq_len) == ("data.txt", 7, 32)


def test_malformed_yaml_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  max_steps: 3\n bad: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d"):
        load_config(PretrainJob, f)


def test_cli_reports_bad_inputs_cleanly(tmp_path):
    r = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "o"), "--set", "train.preset=tiny-0.5m",
                            "--set", f"corpus={tmp_path / 'c.txt'}"])
    assert r.exit_code == 2 and "corpus file not found" in r.output
    (tmp_path / "c.txt").write_text("one doc\n\nanother doc\n")
    r = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "o2"), "--set", "train.preset=tiny-9m",
                            "--set", f"corpus={tmp_path / 'c.txt'}", "--set", "tokenizer.vocab_size=272"])
    assert r.exit_code == 2 and "unknown preset 'tiny-9m'" in r.output and "tiny-2m" in r.output
    r = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "o3"), "--set", "nope=1"])
    assert r.exit_code == 2 and "unknown config key 'nope'" in r.output
    r = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "o3"), "--config", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 2 and "config file not found" in r.output


def test_malformed_corpus_line_is_named(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"text": "a"}\n{"text": oops}\n')
    r = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "o"), "--set", f"corpus={f}"])
    assert r.exit_code == 2 and "c.jsonl line 2" in r.output


def test_help_lists_every_command_with_one_line():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("pretrain", "sft", "presets", "demo", "data"):
        assert cmd in r.output


def test_run_directory_resume_and_mismatch(tmp_path):
    run = Run(tmp_path, {"a": 1}, seed=0)
    run.log(step=1, loss=2.0)
    run.log(step=2, loss=1.5)
    again = Run(tmp_path, {"a": 1}, seed=0)
    assert again.resumed and [m["loss"] for m in again.metrics()] == [2.0, 1.5]
    again.truncate_metrics(1)
    assert [m["step"] for m in again.metrics()] == [1]
    with pytest.raises(RunConfigMismatch):
        Run(tmp_path, {"a": 2}, seed=0)
    assert json.loads((tmp_path / "config.json").read_text())["config"] == {"a": 1}


def test_run_written_before_a_new_config_key_resumes_only_at_its_default(tmp_path):
    from dataclasses import dataclass, field

    @dataclass
    class Inner:
        lr: float = 0.1
        steps: int = 5  # "new" key

    @dataclass
    class Cfg:
        a: int = 1
        inner: Inner = field(default_factory=Inner)
        flag: bool = False  # "new" key

    atomic_write_json(tmp_path / "config.json",
                      {"name": "x", "seed": 0, "config": {"a": 1, "inner": {"lr": 0.1}}})
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')  # work that a mismatch must keep
    assert Run(tmp_path, Cfg(), seed=0).resumed
    for changed in (Cfg(flag=True), Cfg(inner=Inner(steps=6)), Cfg(a=2)):
        with pytest.raises(RunConfigMismatch):
            Run(tmp_path, changed, seed=0)


def test_run_resumes_a_config_whose_bare_defaults_do_not_validate(tmp_path):
    from dataclasses import dataclass, field

    from reasonlab.config import ConfigError

    @dataclass
    class Strict:
        paths: dict = field(default_factory=dict)
        workers: int = 2  # "new" key

        def __post_init__(self):
            if not self.paths:
                raise ConfigError("config key 'paths' must name at least one run")

    atomic_write_json(tmp_path / "config.json",
                      {"name": "x", "seed": 0, "config": {"paths": {"a": "p"}, "workers": 2}})
    (tmp_path / "results.json").write_text("{}")  # work that a mismatch must keep
    assert Run(tmp_path, Strict(paths={"a": "p"}), seed=0).resumed  # same config: no defaults needed
    atomic_write_json(tmp_path / "config.json",
                      {"name": "x", "seed": 0, "config": {"paths": {"a": "p"}}})
    assert Run(tmp_path, Strict(paths={"a": "p"}), seed=0).resumed
    with pytest.raises(RunConfigMismatch):
        Run(tmp_path, Strict(paths={"a": "p"}, workers=3), seed=0)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"bad": object()})
    assert json.loads(p.read_text()) == {"ok": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]


def test_read_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n\n[1]\n')
    with pytest.raises(ValueError, match=r"d.jsonl line 3"):
        list(read_jsonl(p))


def test_torch_threads_sets_and_restores():
    import torch

    from reasonlab.device import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before


def test_posttrain_commands_report_bad_inputs_cleanly(tmp_path):
    (tmp_path / "model").mkdir()
    r = runner.invoke(app, ["posttrain", "dpo", "--out", str(tmp_path / "d"), "--set", f"model={tmp_path / 'model'}",
                            "--set", f"pairs={tmp_path / 'missing.jsonl'}"])
    assert r.exit_code == 2 and "missing.jsonl" in r.output and "Traceback" not in r.output
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{oops\n')
    r = runner.invoke(app, ["posttrain", "dpo", "--out", str(tmp_path / "d"), "--set", f"model={tmp_path / 'model'}",
                            "--set", f"pairs={bad}"])
    assert r.exit_code == 2 and "pairs.jsonl line 2" in r.output
    r = runner.invoke(app, ["posttrain", "average", "--out", str(tmp_path / "a"),
                            "--set", f"models={tmp_path / 'nope1'},{tmp_path / 'nope2'}"])
    assert r.exit_code == 2 and "nope1" in r.output
    best = tmp_path / "best.jsonl"
    best.write_text('{"prompt": "Q: 1 + 1?\\nA: ", "reward": 1.0}\n')
    r = runner.invoke(app, ["posttrain", "rs-sft", "--out", str(tmp_path / "r"),
                            "--set", f"model={tmp_path / 'model'}", "--set", f"best={best}"])
    assert r.exit_code == 2 and "record 1" in r.output and "'completion'" in r.output
