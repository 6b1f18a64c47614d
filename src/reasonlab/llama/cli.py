"""CLI commands of the Llama 3 stack (filled in as runners land)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("presets")
    def presets() -> None:
        """List the Llama 3 presets and the tiny herd with their parameter counts."""
        from reasonlab.llama.configs import count_parameters, known_presets, preset

        for name in known_presets():
            n = count_parameters(preset(name))
            typer.echo(f"{name:16s} {n / 1e6:12.2f}M")
