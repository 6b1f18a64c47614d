"""The one CLI pattern: every command's options in one order, and one way to load a config and
report bad input (cli_common.config_command)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from reasonlab.cli import app
from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command, fail
from reasonlab.config import check_range


def _commands(t: typer.Typer, prefix: str = ""):
    for c in t.registered_commands:
        yield prefix + (c.name or c.callback.__name__), c.callback
    for g in t.registered_groups:
        yield from _commands(g.typer_instance, f"{prefix}{g.name} ")


def _flags(fn) -> list[str]:
    out = []
    for p in inspect.signature(fn).parameters.values():
        decls = getattr(p.default, "param_decls", None) or ()
        out += [d for d in decls if d in ("--out", "--config", "--set")]
    return out


def test_every_command_takes_out_config_set_in_that_order():
    cmds = dict(_commands(app))
    assert {"train-solver", "scaling", "posttrain dpo", "optimizer compare", "pretrain"} <= set(cmds)
    checked = 0
    for name, fn in cmds.items():
        flags = _flags(fn)
        order = [f for f in ("--out", "--config", "--set") if f in flags]
        assert flags == order, f"'{name}' takes {flags}; the order is --out, --config, --set"
        checked += "--config" in flags
    assert checked >= 10


@dataclass
class _Cfg:
    steps: int = 3

    def __post_init__(self) -> None:
        check_range("steps", self.steps, 1, 10)


def _app() -> typer.Typer:
    t = typer.Typer()

    @t.command()
    def go(out: str = OutOpt, config=ConfigOpt, sets: list[str] = SetOpt) -> None:
        with config_command(_Cfg, config, sets) as cfg:
            if cfg.steps == 7:
                raise FileNotFoundError(f"no data for {out}")
            if cfg.steps == 9:
                fail("nine is not allowed")
        typer.echo(f"steps={cfg.steps}")

    @t.command()
    def other() -> None:  # a second command keeps typer from collapsing to one
        pass

    return t


@pytest.mark.parametrize("sets, code, text", [
    (["steps=4"], 0, "steps=4"),
    (["steps=40"], 2, "steps"),           # a bad value names the key (at load)
    (["stepz=4"], 2, "stepz"),            # an unknown key is named
    (["steps=7"], 2, "no data for runs/x"),  # a missing input while running: one line
    (["steps=9"], 2, "nine is not allowed"),
])
def test_config_command_reports_bad_input_in_one_line(sets, code, text):
    args = ["go", "--out", "runs/x"] + [a for s in sets for a in ("--set", s)]
    r = CliRunner().invoke(_app(), args)
    assert r.exit_code == code, r.output
    assert text in r.output and "Traceback" not in r.output
    assert sum(ln.startswith("error: ") for ln in r.output.splitlines()) == (1 if code else 0)
