"""Run-directory helpers pinned value by value: seeding, atomic writes and their permissions,
JSON of numpy/torch/paths, JSONL reading, finished stages, config defaults merged into old
records, record differences, input identities and the run's metrics."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from reasonlab import runs as R


def test_seed_everything_seeds_python_numpy_and_torch():
    R.seed_everything(2**32 + 5)
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    R.seed_everything(2**32 + 5)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a
    np.random.seed(5)  # numpy takes the seed modulo 2**32
    want = float(np.random.rand())
    R.seed_everything(2**32 + 5)
    assert float(np.random.rand()) == want


def test_atomic_write_permissions_and_no_temp_left(tmp_path):
    p = tmp_path / "sub" / "deeper" / "a.bin"  # missing parents are made
    R.atomic_write_bytes(p, b"xyz")
    assert p.read_bytes() == b"xyz"
    assert (p.stat().st_mode & 0o777) == (0o666 & ~R._UMASK)
    R.atomic_write_text(p, "é")
    assert p.read_bytes() == "é".encode("utf-8")
    assert sorted(x.name for x in p.parent.iterdir()) == ["a.bin"]


@dataclasses.dataclass
class _D:
    a: int = 1
    b: list = dataclasses.field(default_factory=lambda: [2])


def test_to_json_converts_numpy_torch_paths_and_dataclasses():
    obj = {"i": np.int64(3), "f": np.float32(0.5), "arr": np.arange(3), "t": torch.tensor([1, 2]),
           "p": Path("x") / "y", "d": _D()}
    assert json.loads(R.to_json(obj)) == {"i": 3, "f": 0.5, "arr": [0, 1, 2], "t": [1, 2],
                                          "p": "x/y", "d": {"a": 1, "b": [2]}}
    assert type(json.loads(R.to_json(np.int64(3)))) is int
    assert R.to_json({"a": 1}, indent=None) == '{"a": 1}'
    assert R.to_json({"b": 1, "a": 2}) == '{\n  "b": 1,\n  "a": 2\n}'  # key order as given
    with pytest.raises(TypeError, match="not JSON serializable: set"):
        R.to_json({1, 2})


def test_json_files_round_trip_and_errors_name_the_file(tmp_path):
    p = tmp_path / "r.json"
    R.atomic_write_json(p, {"x": np.float64(1.5)})
    assert p.read_text() == '{\n  "x": 1.5\n}\n' and R.read_json(p) == {"x": 1.5}
    with pytest.raises(FileNotFoundError, match="file not found"):
        R.read_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{\n"a": }')
    with pytest.raises(ValueError, match="bad.json line 2"):
        R.read_json(tmp_path / "bad.json")


def test_jsonl_skips_blank_lines_and_names_bad_ones(tmp_path):
    p = tmp_path / "m.jsonl"
    R.write_jsonl(p, [{"a": 1}, {"b": np.int32(2)}])
    assert p.read_text() == '{"a": 1}\n{"b": 2}\n'
    p.write_text('{"a": 1}\n\n   \n{"b": 2}\n')
    assert list(R.read_jsonl(p)) == [{"a": 1}, {"b": 2}]
    p.write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"m.jsonl line 3: expected a JSON object, got list"):
        list(R.read_jsonl(p))
    p.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match="line 2"):
        list(R.read_jsonl(p))
    with pytest.raises(FileNotFoundError, match="data file not found"):
        list(R.read_jsonl(tmp_path / "none.jsonl"))


def test_finished_results_needs_results_and_every_output(tmp_path):
    assert R.finished_results(tmp_path) is None
    (tmp_path / "results.json").write_text('{"acc": 0.5}')
    assert R.finished_results(tmp_path) == {"acc": 0.5}
    assert R.finished_results(tmp_path, "model/config.json") is None
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "b").write_text("")
    assert R.finished_results(tmp_path, "model/config.json", "b") == {"acc": 0.5}
    assert R.finished_results(tmp_path, "model/config.json", "c") is None


def test_new_defaults_fill_only_missing_keys_recursively():
    old = {"a": 1, "sec": {"x": 1}, "gone": 5}
    defaults = {"a": 9, "b": 2, "sec": {"x": 7, "y": 3}}
    assert R._with_new_defaults(old, defaults) == {"a": 1, "b": 2, "sec": {"x": 1, "y": 3},
                                                   "gone": 5}
    assert R._with_new_defaults(3, {"a": 1}) == 3 and R._with_new_defaults({"a": 1}, 3) == {"a": 1}


@dataclasses.dataclass
class _Cfg:
    need: int
    lr: float = 0.1
    steps: int = 3
    tags: list = dataclasses.field(default_factory=lambda: ["x"])
    sub: _D = dataclasses.field(default_factory=_D)
    bad: list = dataclasses.field(default_factory=lambda: [][0])


def test_defaults_of_a_config_class():
    cfg = _Cfg.__new__(_Cfg)
    assert R._defaults_of(cfg) == {"lr": 0.1, "steps": 3, "tags": ["x"], "sub": {"a": 1, "b": [2]}}


def test_record_differences_flatten_nested_keys():
    a = {"x": 1, "s": {"y": 2, "z": {"w": 3}}, "e": {}}
    b = {"x": 1, "s": {"y": 4, "z": {"w": 3}}, "n": 0, "e": {}}
    assert R._flatten(a) == {"x": 1, "s.y": 2, "s.z.w": 3, "e": {}}
    assert R._flatten(7, "k.") == {"k": 7}
    assert R.record_differences(a, b) == ["n: '(absent)' there, 0 now", "s.y: 2 there, 4 now"]
    assert R.record_differences(a, a) == []


def test_identities_of_files_texts_folders_and_names(tmp_path):
    f = tmp_path / "d.txt"
    f.write_bytes(b"abc")
    sha = hashlib.sha256(b"abc").hexdigest()
    assert R.file_identity(f) == {"path": str(f), "bytes": 3, "sha256": sha}
    assert R.input_identity(f) == R.file_identity(f)
    h = hashlib.sha256(b"a\x00" + b'{"k": 1}\x00').hexdigest()
    assert R.texts_identity(["a", {"k": 1}]) == {"items": 2, "sha256": h}
    assert R.input_identity(None) is None and R.input_identity("") is None
    assert R.input_identity("gsm8k") == {"name": "gsm8k"}
    m = tmp_path / "model"
    m.mkdir()
    (m / "w.bin").write_bytes(b"abc")
    (m / "x.tmp").write_bytes(b"partial")
    h = hashlib.sha256(b"w.bin\x003\x00" + sha.encode()).hexdigest()
    assert R.input_identity(m) == {"path": str(m), "files": 1, "sha256": h}
    from reasonlab.lm.checkpoint import MANIFEST

    (m / MANIFEST).write_text("{}")
    assert R.input_identity(m) == {"path": str(m),
                                   "manifest_sha256": hashlib.sha256(b"{}").hexdigest()}
    out = R.inputs_identity(data=["a", {"k": 1}], model=None, empty="", name="n", pair=("a",))
    assert out == {"data": R.texts_identity(["a", {"k": 1}]), "name": {"name": "n"},
                   "pair": R.texts_identity(["a"])}


def test_run_metrics_results_and_paths(tmp_path):
    run = R.Run(tmp_path / "r", {"lr": 1}, seed=3, name="job")
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == {
        "name": "job", "seed": 3, "config": {"lr": 1}}
    assert run.resumed is False and run.metrics() == [] and run.results() is None
    for s in (1, 2, 3):
        run.log(step=s, loss=float(s))
    run.log(note="end")
    assert [m.get("step") for m in run.metrics()] == [1, 2, 3, None]
    run.truncate_metrics(2)
    assert [(m["step"], m.get("loss")) for m in run.metrics()] == [(1, 1.0), (2, 2.0), (None, None)]
    run.restart_metrics()
    assert run.metrics() == []
    assert run.path("a.png") == tmp_path / "r" / "a.png"
    assert run.checkpoint_dir.is_dir() and run.checkpoint_dir == tmp_path / "r" / "checkpoints"
    assert run.finished() is None
    run.save_results({"acc": 1})
    assert run.results() == {"acc": 1} and run.finished() == {"acc": 1}
    again = R.Run(tmp_path / "r", {"lr": 1}, seed=3, name="job")
    assert again.resumed is True
    with pytest.raises(R.RunConfigMismatch, match="seed: 3 there, 4 now"):
        R.Run(tmp_path / "r", {"lr": 1}, seed=4, name="job")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        R.Run(tmp_path / "file")


def test_has_work_ignores_config_tokenizer_temp_and_empty_files(tmp_path):
    run = R.Run(tmp_path / "r", {"a": 1}, seed=0)
    assert run.has_work() is False
    (tmp_path / "r" / "tokenizer").mkdir()
    (tmp_path / "r" / "tokenizer" / "t.json").write_text("{}")
    (tmp_path / "r" / "x.tmp").write_text("partial")
    (tmp_path / "r" / "empty").mkdir()
    (tmp_path / "r" / "empty" / "e.txt").write_text("")
    (tmp_path / "r" / "z.txt").write_text("")
    assert run.has_work() is False
    # another config there with no work: started again, no error
    R.Run(tmp_path / "r", {"a": 2}, seed=0)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["config.json"]
    (tmp_path / "r" / "metrics.jsonl").write_text("{}\n")
    assert R.Run(tmp_path / "r", {"a": 2}, seed=0).has_work() is True
    run = R.Run(tmp_path / "r", {"a": 3}, seed=0, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["config.json"]
    assert run.resumed is False


def test_folder_files_over_64_mib_are_identified_by_size_and_time(tmp_path):
    m = tmp_path / "model"
    m.mkdir()
    big = m / "w.bin"
    with big.open("wb") as f:  # sparse: no 64 MiB written
        f.truncate((64 << 20) + 1)
    st = big.stat()
    before = R.input_identity(m)
    with big.open("r+b") as f:
        f.write(b"x")
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert R.input_identity(m) == before  # contents not read: same size and time
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert R.input_identity(m) != before
