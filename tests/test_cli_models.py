"""The command line wires the model cache into model loading: a recipe name works wherever a
model folder does, and an unknown name is refused with the known recipes listed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from reasonlab import cli
from reasonlab.lm import load


def test_cli_registers_the_model_cache_resolver(monkeypatch):
    monkeypatch.setattr(load, "_RESOLVERS", [])
    result = CliRunner().invoke(cli.app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert "herd-m" in result.output
    with pytest.raises(FileNotFoundError, match="known recipes: .*solver-addsub"):
        load.resolve_folder("no-such-recipe")
