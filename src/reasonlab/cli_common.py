"""Shared pieces of the CLI: the options every command takes and the one way a command runs.

Every command follows one pattern:

* options in one order: ``--out`` (where it writes), then ``--config``, then ``--set`` (repeatable
  ``key=value`` overrides), then the command's own options;
* the body runs inside :func:`config_command`, which loads the config (a bad file, key or value
  exits with status 2 and a one-line message naming it) and turns the errors bad input raises
  while running into the same one-line exit instead of a traceback;
* a module registers its commands with one ``register(app)`` function (listed in
  ``reasonlab.cli.COMMAND_MODULES``) that adds module-level command functions or one sub-app.

A command without a config uses :func:`user_errors` alone; :func:`fail` ends any command with a
message.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NoReturn, Optional, TypeVar

import typer

from reasonlab.config import ConfigError, load_config

T = TypeVar("T")

OutOpt = typer.Option(..., "--out", "-o", help="Run directory to write (resumed if it exists).")
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file.")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config key: key=value (repeatable).")


def fail(message: str) -> NoReturn:
    """Print ``error: message`` in red on stderr and exit with status 2."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


def build_config(cls: type[T], config: Optional[Path], sets: Optional[list[str]],
                 base: dict[str, Any] | None = None) -> T:
    """Load a config or exit with status 2 and a message that names the bad key or file."""
    try:
        return load_config(cls, config, sets or [], base=base)
    except ConfigError as e:
        fail(str(e))


def _message(e: BaseException) -> str:
    # KeyError's str() is the repr of its argument; the argument is the message
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors bad input raises (missing file, bad value or key, a run directory made
    with another config) into a one-line message and exit status 2 instead of a traceback."""
    from reasonlab.runs import RunConfigMismatch

    try:
        yield
    except (FileNotFoundError, ValueError, KeyError, RunConfigMismatch) as e:
        fail(_message(e))


def config_yaml(cfg: Any) -> str:
    """A config as YAML (every key, in declaration order) that ``--config`` reads back."""
    import json

    import yaml

    from reasonlab.runs import to_json

    return yaml.safe_dump(json.loads(to_json(cfg)), sort_keys=False, default_flow_style=False)


@contextmanager
def config_command(cls: type[T], config: Optional[Path], sets: Optional[list[str]], *,
                   base: dict[str, Any] | None = None) -> Iterator[T]:
    """The body of a config-driven command: ``with config_command(Cfg, config, sets) as cfg:``
    loads ``cfg`` (:func:`build_config`), prints the effective config on stderr and runs the
    block under :func:`user_errors`."""
    cfg = build_config(cls, config, sets, base)
    typer.echo("effective config:\n" + _indent(config_yaml(cfg)), err=True)
    with user_errors():
        yield cfg


def _indent(text: str) -> str:
    return "".join("  " + line for line in text.splitlines(keepends=True))


class ProgressLines:
    """A text stream for logs that are not a terminal: progress bars' carriage-return redraws
    become one line at most every ``interval`` seconds (and the bar's last state), so a log
    file holds periodic lines instead of one huge line; everything else passes through."""

    def __init__(self, stream: Any, interval: float = 10.0):
        self._stream = stream
        self._interval = interval
        self._last = 0.0
        self._pending = ""

    def write(self, text: str) -> int:
        import time

        if "\r" not in text:
            if text.startswith("\n") and self._pending:  # a bar closing: its final state
                self._stream.write(self._pending + "\n")
                self._pending, text = "", text[1:]
            return self._stream.write(text) if text else 0
        *_, last = text.split("\r")
        last = last.strip()
        if not last:
            return len(text)
        self._pending = last
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._stream.write(last + "\n")
            self._stream.flush()
            self._last, self._pending = now, ""
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
