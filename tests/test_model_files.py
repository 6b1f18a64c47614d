"""Models say what is wrong with them: manifests checked on load, one-line errors naming the
file, a run folder pointed at instead of its model, over-long prompts, umask-respecting weight
files, and ``generate`` reading escapes alike in prompts and stops."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from typer.testing import CliRunner

from reasonlab.cli import app
from reasonlab.lm.checkpoint import (
    MANIFEST,
    ModelLoadError,
    check_model_folder,
    save_model_folder,
    verify_manifest,
)
from reasonlab.lm.local import LocalLM

runner = CliRunner()


@pytest.fixture
def model_dir(tmp_path, tiny_tokenizer):
    from conftest import build_tiny_model

    old = os.umask(0o022)
    try:
        d = save_model_folder(build_tiny_model(tiny_tokenizer, seed=1), tiny_tokenizer,
                              tmp_path / "run" / "model")
    finally:
        os.umask(old)
    return d


def _one_line_error(r):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


def test_manifest_lists_every_file_and_weights_follow_the_umask(model_dir):
    man = json.loads((model_dir / MANIFEST).read_text())
    w = man["files"]["model.safetensors"]
    assert w["size"] == (model_dir / "model.safetensors").stat().st_size and len(w["sha256"]) == 64
    assert "config.json" in man["files"] and "tokenizer.json" in man["files"]
    assert verify_manifest(model_dir) is True
    for name in ("model.safetensors", "config.json", MANIFEST):
        assert stat.S_IMODE((model_dir / name).stat().st_mode) == 0o644, name


def test_truncated_weights_fail_in_one_line_naming_the_file(model_dir, tmp_path):
    w = model_dir / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"model.safetensors: \d+ bytes, the manifest says"):
        LocalLM.from_pretrained(model_dir, device="cpu")
    r = runner.invoke(app, ["generate", "--model", str(model_dir), "--prompt", "hi"])
    assert "model.safetensors" in _one_line_error(r)
    # Without the manifest check the loader's own failure is still one line naming the file.
    r = runner.invoke(app, ["generate", "--model", str(model_dir), "--prompt", "hi", "--no-verify"])
    line = _one_line_error(r)
    assert "cannot load the weights in" in line and "model.safetensors" in line


def test_corrupted_bytes_are_caught_and_no_verify_skips(model_dir):
    w = model_dir / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-100:-90] = b"\xff" * 10  # same size, other bytes inside a weight tensor
    w.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="model.safetensors: SHA-256 differs"):
        check_model_folder(model_dir)
    lm = LocalLM.from_pretrained(model_dir, device="cpu", verify=False)
    assert lm.context_length() == 512


def test_run_folder_instead_of_its_model(model_dir):
    run_dir = model_dir.parent
    (run_dir / "config.json").write_text('{"name": "pretrain", "seed": 0, "config": {}}')  # a run record
    r = runner.invoke(app, ["generate", "--model", str(run_dir), "--prompt", "hi"])
    assert f"did you mean {run_dir / 'model'}?" in _one_line_error(r)
    r = runner.invoke(app, ["generate", "--model", str(run_dir / "nope"), "--prompt", "hi"])
    assert "does not exist" in _one_line_error(r)


def test_over_long_prompt_refused_or_cut_from_the_left(model_dir, caplog):
    lm = LocalLM.from_pretrained(model_dir, device="cpu")
    ctx = lm.context_length()
    long = "Tom has 3 apples. " * 400
    assert len(lm.encode(long)) > ctx
    with pytest.raises(ValueError, match=rf"longer than the model's context of {ctx}"):
        lm.generate([long], max_new_tokens=2)
    lm.long_prompts = "left"
    with caplog.at_level("WARNING", logger="reasonlab.lm.local"):
        g = lm.generate([long], max_new_tokens=2)
    assert len(g[0].token_ids) == 2 and "kept its last" in caplog.text
    cut = lm._fit_context([lm.encode(long)], 2)[0]
    assert cut[0] == lm.tokenizer.bos_token_id and len(cut) == ctx - 2
    r = runner.invoke(app, ["generate", "--model", str(model_dir), "--prompt", long,
                            "--max-new-tokens", "2"])
    assert "longer than the model's context" in _one_line_error(r)
    r = runner.invoke(app, ["generate", "--model", str(model_dir), "--prompt", long,
                            "--max-new-tokens", "2", "--truncate-prompt", "left"])
    assert r.exit_code == 0, r.output


def test_generate_reads_escapes_alike_in_prompt_and_stop(monkeypatch, model_dir):
    from reasonlab.llama.cli import unescape

    assert unescape("Q: 3+4?\\nA: ", "--prompt") == "Q: 3+4?\nA: "
    assert unescape("é\\n→", "--stop") == "é\n→"           # non-ASCII kept, escapes read
    assert unescape("\\u00e9", "--stop") == "é"
    seen = {}

    def fake_generate(self, prompts, **kw):
        seen["prompts"], seen["stop"] = list(prompts), kw["stop"]
        return []

    monkeypatch.setattr(LocalLM, "generate", fake_generate)
    r = runner.invoke(app, ["generate", "--model", str(model_dir), "--prompt", "Q: 3+4?\\nA: ",
                            "--stop", "\\n", "--stop", "→"])
    assert r.exit_code == 0, r.output
    assert seen == {"prompts": ["Q: 3+4?\nA: "], "stop": ["\n", "→"]}
    r = runner.invoke(app, ["generate", "--model", str(model_dir), "--prompt", "bad \\x1"])
    assert "bad backslash escape" in _one_line_error(r)


def test_damaged_checkpoint_fails_on_resume_naming_the_file(tmp_path):
    from reasonlab.llama.jobs import PretrainJob, run_pretrain_job
    from reasonlab.config import load_config

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(f"Tom has {i} apples and {i + 2} pears." for i in range(40)))
    sets = ["train.preset=tiny-0.5m", "train.seq_len=64", "train.batch_size=4", "train.max_steps=2",
            "train.warmup_steps=1", "train.eval_every=2", "train.eval_batches=1",
            "train.checkpoint_every=2", "train.device=cpu", "tokenizer.vocab_size=300",
            f"corpus={corpus}"]
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "run"
        run_pretrain_job(load_config(PretrainJob, None, sets), out)
        ck = next((out / "checkpoints").glob("step_*"))
        assert (ck / MANIFEST).is_file() and (out / "model" / MANIFEST).is_file()
        assert stat.S_IMODE((out / "model" / "model.safetensors").stat().st_mode) == \
            0o666 & ~_umask()
        (out / "results.json").unlink()  # as if killed after the last checkpoint
        w = ck / "model.safetensors"
        w.write_bytes(w.read_bytes()[:-8])
        with pytest.raises(ModelLoadError, match=r"step_0000002/model.safetensors: \d+ bytes"):
            run_pretrain_job(load_config(PretrainJob, None, sets), out)
    finally:
        torch.set_num_threads(old)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
