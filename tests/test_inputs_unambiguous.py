"""Names and paths cannot be confused, and a report of no runs says so."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from reasonlab.cli import app
from reasonlab.llama.corpus import data_set_name, load_corpus

runner = CliRunner()


def test_a_name_that_is_also_a_folder_names_both_readings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert data_set_name("skillmath") == "skillmath"
    (tmp_path / "skillmath").mkdir()
    with pytest.raises(ValueError, match=r"'skillmath' is both a data set name and the path .*"
                                         r"write data:skillmath .* or ./skillmath"):
        load_corpus("skillmath")
    assert data_set_name("data:skillmath") == "skillmath"
    assert data_set_name("./skillmath") is None
    with pytest.raises(ValueError, match="is a folder; give a .txt or .jsonl file"):
        load_corpus("./skillmath")
    (tmp_path / "notes.txt").write_text("one\n\ntwo\n")
    assert load_corpus("notes.txt") == ["one", "two"]
    with pytest.raises(ValueError, match="data set 'math' has no split 'train'"):
        load_corpus("math")
    r = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "r"), "--set", "corpus=skillmath"])
    assert r.exit_code == 2 and "both a data set name and the path" in r.output
    assert not (tmp_path / "r").exists()


def test_report_on_an_empty_folder_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 2 and "no runs in" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "r.html").exists()
