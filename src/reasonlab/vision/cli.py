"""CLI: ``reasonlab multimodal`` (both stages of the compositional image adapter)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command


def multimodal_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                   sets: Optional[list[str]] = SetOpt) -> None:
    """Stage 1 (encoder) and stage 2 (cross-attention adapter on a frozen solver), then the
    held-out table: with image, as text (ceiling), no image (floor)."""
    from reasonlab.vision.runner import MultimodalConfig, format_multimodal, run_multimodal

    with config_command(MultimodalConfig, config, sets) as cfg:
        res = run_multimodal(cfg, out)
    typer.echo(format_multimodal(res))
    typer.echo(f"model: {out / 'model'}  results: {out / 'results.json'}")


def register(app: typer.Typer) -> None:
    app.command("multimodal")(multimodal_cmd)
