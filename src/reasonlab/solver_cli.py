"""CLI: ``reasonlab train-solver`` — the tiny SkillMath solver pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command


def train_solver_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                     sets: Optional[list[str]] = SetOpt) -> None:
    """Generate SkillMath, train a tokenizer, pretrain and SFT a tiny Llama, evaluate per skill.

    Rerunning on the same --out resumes: finished stages are skipped.
    """
    from reasonlab.solver import SolverConfig, format_solver_table, run_solver

    with config_command(SolverConfig, config, sets) as cfg:
        res = run_solver(cfg, out)
    typer.echo(format_solver_table(res))
    typer.echo(f"train minutes: {res['train_minutes']:.2f}  results: {out / 'results.json'}")


def register(app: typer.Typer) -> None:
    app.command("train-solver")(train_solver_cmd)
