"""Runners that read models and data record what they read (reasonlab.runs.inputs_identity) with
their whole config, and a rerun on other inputs or another config is refused naming each differing
key with both values, instead of resuming or returning the old results."""

from __future__ import annotations

import json

import pytest
import torch

from reasonlab.device import torch_threads
from reasonlab.runs import RunConfigMismatch, input_identity, inputs_identity


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


def test_input_identity_of_files_folders_and_names(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"a": 1}\n')
    one = input_identity(f)
    assert one["bytes"] == 9 and len(one["sha256"]) == 64
    f.write_text('{"a": 2}\n')  # same path and size, other contents
    assert input_identity(f)["sha256"] != one["sha256"]

    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "w.bin").write_bytes(b"\x00" * 10)
    a = input_identity(d)
    assert a["files"] == 2 and a == input_identity(d)
    (d / "w.bin").write_bytes(b"\x01" * 10)
    assert input_identity(d)["sha256"] != a["sha256"]
    (d / "reasonlab_manifest.json").write_text('{"files": {}}')
    m = input_identity(d)
    assert set(m) == {"path", "manifest_sha256"}  # a manifest already hashes every file

    assert input_identity("herd-m") == {"name": "herd-m"}  # a recipe or data set name
    assert input_identity("") is None and input_identity(None) is None
    ids = inputs_identity(model=str(d), data=["x", "y"], none="")
    assert set(ids) == {"model", "data"} and ids["data"]["items"] == 2


def _sft_model(tmp_path, tiny_tokenizer, name="sft", seed=0):
    from conftest import build_tiny_model

    d = tmp_path / name
    build_tiny_model(tiny_tokenizer, seed=seed).save_pretrained(str(d))
    tiny_tokenizer.save_pretrained(str(d))
    return d


PAIRS = [{"prompt": "Q: What is 2 + 3?\nA: ", "chosen": "The answer is 5.", "rejected": "The answer is 6."},
         {"prompt": "Q: What is 9 - 1?\nA: ", "chosen": "The answer is 8.", "rejected": "no idea"}]


def test_dpo_rerun_on_other_pairs_model_or_config_is_refused(tmp_path, tiny_tokenizer):
    from reasonlab.posttrain import llama3_dpo_config, run_dpo

    sft = _sft_model(tmp_path, tiny_tokenizer)
    other = _sft_model(tmp_path, tiny_tokenizer, "other", seed=1)
    cfg = llama3_dpo_config(lr=1e-3, epochs=1, batch_size=2)
    out = tmp_path / "dpo"
    res = run_dpo(sft, PAIRS, cfg, out)
    rec = json.loads((out / "config.json").read_text())
    assert rec["identity"]["pairs"]["items"] == 2 and rec["identity"]["model"]["path"] == str(sft)
    weights = (out / "model" / "model.safetensors").read_bytes()
    assert run_dpo(sft, PAIRS, cfg, out) == res  # the same job: a no-op

    with pytest.raises(RunConfigMismatch) as e:
        run_dpo(sft, PAIRS[:1], cfg, out)
    old, new = (inputs_identity(pairs=p)["pairs"] for p in (PAIRS, PAIRS[:1]))
    msg = str(e.value)
    assert f"identity.pairs.items: 2 there, 1 now" in msg
    assert f"identity.pairs.sha256: '{old['sha256']}' there, '{new['sha256']}' now" in msg
    with pytest.raises(RunConfigMismatch, match=rf"identity.model.path: '{sft}' there, '{other}' now"):
        run_dpo(other, PAIRS, cfg, out)
    with pytest.raises(RunConfigMismatch, match=r"beta: 0.1 there, 0.2 now"):
        run_dpo(sft, PAIRS, llama3_dpo_config(lr=1e-3, epochs=1, batch_size=2, beta=0.2), out)
    assert (out / "model" / "model.safetensors").read_bytes() == weights  # nothing lost


def test_rs_sft_rerun_on_other_samples_is_refused(tmp_path, tiny_tokenizer):
    from reasonlab.posttrain import rs_sft_config, run_rs_sft

    sft = _sft_model(tmp_path, tiny_tokenizer)
    best = [{"prompt": p["prompt"], "completion": p["chosen"], "reward": 1.0} for p in PAIRS]
    cfg = rs_sft_config(lr=1e-3, max_steps=2, batch_size=2, warmup_steps=1)
    out = tmp_path / "rs_sft"
    res = run_rs_sft(sft, best, cfg, out)
    assert res["examples"] == 2 and run_rs_sft(sft, best, cfg, out) == res
    with pytest.raises(RunConfigMismatch, match=r"identity.data.items: 2 there, 1 now"):
        run_rs_sft(sft, best[:1], cfg, out)  # used to return the old results silently
    with pytest.raises(RunConfigMismatch, match=r"max_steps: 2 there, 3 now"):
        run_rs_sft(sft, best, rs_sft_config(lr=1e-3, max_steps=3, batch_size=2, warmup_steps=1), out)


def test_rejection_sampling_rerun_on_other_problems_or_model_is_refused(tmp_path):
    from test_posttrain import PROBLEMS, ScriptedLM

    from reasonlab.posttrain import SamplingConfig, run_rejection_sampling

    cfg = SamplingConfig(k=4, temperature=1.0, batch_size=3, n_prompts=0)
    out = tmp_path / "rs"
    res = run_rejection_sampling(ScriptedLM(), PROBLEMS, cfg, out, progress=False, model="m1")
    assert run_rejection_sampling(ScriptedLM(), PROBLEMS, cfg, out, progress=False, model="m1") == res
    with pytest.raises(RunConfigMismatch, match=r"identity.problems.items: 3 there, 2 now"):
        run_rejection_sampling(ScriptedLM(), PROBLEMS[:2], cfg, out, progress=False, model="m1")
    with pytest.raises(RunConfigMismatch, match=r"identity.model.name: 'm1' there, 'm2' now"):
        run_rejection_sampling(ScriptedLM(), PROBLEMS, cfg, out, progress=False, model="m2")


def test_posttrain_run_refuses_a_changed_problem_file(tmp_path, monkeypatch):
    from test_posttrain import PROBLEMS, ScriptedLM

    from reasonlab.data.skillmath import write_splits
    from reasonlab.lm.local import LocalLM
    from reasonlab.posttrain import PosttrainConfig, run_posttrain
    from reasonlab.posttrain import runner as R

    write_splits({"train": PROBLEMS}, tmp_path / "data")
    monkeypatch.setattr(LocalLM, "from_pretrained", classmethod(lambda cls, path, **kw: ScriptedLM()))

    def stop(*a, **k):
        raise RuntimeError("stop")

    monkeypatch.setattr(R, "run_rejection_sampling", stop)  # the run's record only
    problems = tmp_path / "data" / "train.jsonl"
    cfg = PosttrainConfig(model=str(tmp_path / "sft"), problems=str(problems), threads=1, dpo_runs=1)
    with pytest.raises(RuntimeError, match="stop"):
        run_posttrain(cfg, tmp_path / "pt", progress=False)
    rec = json.loads((tmp_path / "pt" / "config.json").read_text())
    old = input_identity(problems)["sha256"]
    assert rec["identity"]["problems"]["sha256"] == old
    (tmp_path / "pt" / "metrics.jsonl").write_text('{"step": 0}\n')  # some work done
    write_splits({"train": PROBLEMS[:2]}, tmp_path / "data")  # the same path, other problems
    new = input_identity(problems)["sha256"]
    with pytest.raises(RunConfigMismatch, match=rf"identity.problems.sha256: '{old}' there, '{new}' now"):
        run_posttrain(cfg, tmp_path / "pt", progress=False)
