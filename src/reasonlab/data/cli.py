"""``reasonlab data ...``: generate SkillMath and inspect the shipped data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, SetOpt, config_command, user_errors

data_app = typer.Typer(help="Data: the SkillMath generator and the shipped data sets.",
                       no_args_is_help=True)


@data_app.command("skillmath")
def skillmath(out: Path = typer.Option(..., "--out", "-o",
                                       help="A .jsonl file (all splits) or a folder (one file per split)."),
              config: Optional[Path] = ConfigOpt, sets: Optional[list[str]] = SetOpt) -> None:
    """Generate the SkillMath splits as JSONL (byte-identical for the same config and seed)."""
    from reasonlab.data.skillmath import SkillMathConfig, generate, write_splits

    with config_command(SkillMathConfig, config, sets) as cfg:
        splits = generate(cfg)
        paths = write_splits(splits, out)
    for name, probs in splits.items():
        typer.echo(f"{name:14s} {len(probs):8d}")
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


@data_app.command("show")
def show(name: str = typer.Argument(..., help="Data set name (gsm8k, math, math500, svamp, advbench)."),
         split: str = typer.Option("test", "--split"), limit: int = typer.Option(3, "--limit", "-n")) -> None:
    """Print the first problems of a shipped data set."""
    from reasonlab.data.datasets import load_dataset

    with user_errors():
        probs = load_dataset(name, split=split, limit=limit)
    for p in probs:
        typer.echo(f"--- {p.id} [{', '.join(p.skills)}] level={p.level}")
        typer.echo(p.question)
        typer.echo(f"answer: {p.answer}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
