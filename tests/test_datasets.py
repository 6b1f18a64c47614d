"""Loaders of the shipped data sets: counts, fields, and errors that name what is wrong."""

from __future__ import annotations

import json
import shutil

import pytest

from reasonlab.data.datasets import DATA_ENV, data_dir, known_datasets, load_dataset


@pytest.mark.parametrize("name,split,rows", [
    ("gsm8k", "train", 7473), ("gsm8k", "test", 1319), ("math", "test", 5000),
    ("math500", "test", 500), ("svamp", "test", 1000), ("advbench", "behaviors", 520),
    ("advbench", "strings", 574),
])
def test_counts(name, split, rows):
    assert len(load_dataset(name, split)) == rows


def test_licences_are_shipped():
    root = data_dir()
    for folder in ("gsm8k", "math", "svamp", "advbench"):
        assert "Permission is hereby granted" in (root / folder / "LICENSE").read_text()
    assert "MIT" in (root / "README.md").read_text()


def test_records():
    g = load_dataset("gsm8k", limit=2)
    assert len(g) == 2 and g[0].answer == "18" and g[0].solution.endswith("#### 18")
    m = load_dataset("math500", limit=1)[0]
    assert m.answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert (m.subject, m.level, m.skills) == ("Precalculus", 2, ["Precalculus"])
    full = load_dataset("math", limit=1)[0]
    assert full.answer == "2" and full.level == 3 and full.subject == "Algebra"
    s = load_dataset("svamp", limit=1)[0]
    assert s.answer == "145" and s.skills == ["Common-Division"]
    assert s.question.endswith("93 groups, how big is each group of bananas?")
    a = load_dataset("advbench", limit=1)[0]
    assert a.question.startswith("Write a script") and a.solution.startswith("Sure, here is")
    sm = load_dataset("skillmath", "test", limit=5)
    assert len(sm) == 5 and all(p.source == "skillmath" for p in sm)


def test_levels_cover_math():
    levels = {p.level for p in load_dataset("math")}
    assert levels == {1, 2, 3, 4, 5}


def test_unknown_name_and_split_list_known():
    with pytest.raises(ValueError) as e:
        load_dataset("gsm9k")
    for name in known_datasets():
        assert name in str(e.value)
    with pytest.raises(ValueError, match="known splits: train, test"):
        load_dataset("gsm8k", split="dev")


def test_malformed_line_names_file_and_line(tmp_path, monkeypatch):
    (tmp_path / "gsm8k").mkdir()
    good = json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"})
    (tmp_path / "gsm8k" / "test.jsonl").write_text(f"{good}\n{good}\n{{not json\n")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert data_dir() == tmp_path
    assert len(load_dataset("gsm8k", limit=2)) == 2
    with pytest.raises(ValueError, match=r"gsm8k/test\.jsonl line 3"):
        load_dataset("gsm8k")


def test_missing_key_and_missing_file_name_the_path(tmp_path):
    (tmp_path / "math").mkdir()
    (tmp_path / "math" / "math500.jsonl").write_text(json.dumps({"problem": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"math500\.jsonl record 1: missing key\(s\) \['solution'\]"):
        load_dataset("math500", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"svamp/test\.jsonl"):
        load_dataset("svamp", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"harmful_behaviors\.csv"):
        load_dataset("advbench", root=tmp_path)
    shutil.copytree(data_dir() / "svamp", tmp_path / "svamp")
    assert len(load_dataset("svamp", root=tmp_path, limit=3)) == 3
