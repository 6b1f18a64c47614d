"""``reasonlab blora``: fine-tune one model with B-LoRA, PEFT LoRA (r=8) and PEFT AdaLoRA on the
same task, data, steps and seeds, and write the comparison table and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command


def blora_cmd(
    out: Path = OutOpt,
    config: Optional[Path] = ConfigOpt,
    sets: Optional[list[str]] = SetOpt,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Base model folder "
                                        "(overrides the config's 'model')."),
) -> None:
    """Compare B-LoRA with PEFT LoRA and AdaLoRA; writes OUT/results.json and plots (resumes OUT)."""
    from reasonlab.peft.compare import CompareConfig, format_table, run_compare

    sets = list(sets or []) + ([f"model={model}"] if model else [])
    with config_command(CompareConfig, config, sets) as cfg:
        results = run_compare(cfg, out)
    typer.echo(format_table(results))


def register(app: typer.Typer) -> None:
    app.command("blora")(blora_cmd)
