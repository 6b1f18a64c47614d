"""Shared pieces of the CLI: the ``--config``/``--set`` options and clean error exits."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, TypeVar

import typer

from reasonlab.config import ConfigError, load_config

T = TypeVar("T")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file.")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config key: key=value (repeatable).")
OutOpt = typer.Option(..., "--out", "-o", help="Run directory to write (resumed if it exists).")


def build_config(cls: type[T], config: Optional[Path], sets: Optional[list[str]],
                 base: dict[str, Any] | None = None) -> T:
    """Load a config or exit with status 2 and a message that names the bad key or file."""
    try:
        return load_config(cls, config, sets or [], base=base)
    except ConfigError as e:
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None


def fail(message: str) -> None:
    """Print an error and exit with status 2."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors bad input raises (missing file, bad value or key, a run directory made
    with another config) into a one-line message and exit status 2 instead of a traceback."""
    from reasonlab.runs import RunConfigMismatch

    try:
        yield
    except (FileNotFoundError, ValueError, KeyError, RunConfigMismatch) as e:
        fail(str(e))
