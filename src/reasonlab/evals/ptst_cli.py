"""``reasonlab ptst``: the train-template × test-template matrix of helpfulness and ASR."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command


def ptst_cmd(
    out: Path = OutOpt,
    config: Optional[Path] = ConfigOpt,
    sets: Optional[list[str]] = SetOpt,
    threads: int = typer.Option(1, help="torch CPU threads."),
) -> None:
    """Fine-tune a chat model on a benign task with each training template, test it with each
    test template (PTST, arXiv:2402.18540); resumes OUT cell by cell."""
    import torch

    from reasonlab.evals.ptst import PTSTConfig, format_matrix, run_ptst

    torch.set_num_threads(threads)
    with config_command(PTSTConfig, config, sets) as cfg:
        res = run_ptst(cfg, out)
    typer.echo(format_matrix(res))
    typer.echo(f"results: {out / 'results.json'}  heatmaps: {', '.join(res['plots'])}")


def register(app: typer.Typer) -> None:
    app.command("ptst")(ptst_cmd)
