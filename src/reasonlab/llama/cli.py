"""CLI commands of the Llama 3 stack: presets, pretrain, sft."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, build_config, fail


def register(app: typer.Typer) -> None:
    @app.command("presets")
    def presets() -> None:
        """List the Llama 3 presets and the tiny herd with their parameter counts."""
        from reasonlab.llama.configs import count_parameters, known_presets, preset

        for name in known_presets():
            n = count_parameters(preset(name))
            typer.echo(f"{name:16s} {n / 1e6:12.2f}M")

    @app.command("pretrain")
    def pretrain_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                     set_: Optional[list[str]] = SetOpt) -> None:
        """Pre-train a Llama 3 preset on a corpus (runs under torchrun with DDP/FSDP2)."""
        from reasonlab.llama.jobs import PretrainJob, print_results, run_pretrain_job

        job = build_config(PretrainJob, config, set_)
        try:
            typer.echo(print_results(run_pretrain_job(job, out)))
        except (FileNotFoundError, ValueError, KeyError) as e:
            fail(str(e))

    @app.command("sft")
    def sft_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                set_: Optional[list[str]] = SetOpt) -> None:
        """Supervised fine-tuning on prompt→completion pairs (loss on completions only)."""
        from reasonlab.llama.jobs import SFTJob, print_results, run_sft_job

        job = build_config(SFTJob, config, set_)
        try:
            typer.echo(print_results(run_sft_job(job, out)))
        except (FileNotFoundError, ValueError, KeyError) as e:
            fail(str(e))
