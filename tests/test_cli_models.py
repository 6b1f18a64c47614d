"""The command line wires the model cache into model loading: a recipe name works wherever a
model folder does; any other name falls through to the loader's own error."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from reasonlab import cli
from reasonlab.lm import load


def test_cli_registers_the_model_cache_resolver(monkeypatch, tmp_path):
    monkeypatch.setattr(load, "_RESOLVERS", [])
    monkeypatch.setenv("REASONLAB_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(cli.app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert load._RESOLVERS == [cli._recipe_folder]
    folder = load.resolve_folder("solver-addsub:micro")  # built on first use, micro: seconds
    assert (folder / "config.json").is_file()
    assert load.resolve_folder("solver-addsub:micro") == folder
    with pytest.raises(FileNotFoundError, match="reasonlab models list"):
        load.resolve_folder("no-such-recipe")
    assert cli._recipe_folder("solver-addsub:large") is None
