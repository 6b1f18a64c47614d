"""``reasonlab demo``: the end-to-end pipeline on SkillMath and the tiny herd."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(out: str = typer.Option("runs/demo", "--out", "-o", help="Output folder (resumable)."),
             preset: str = typer.Option("quick", "--preset", help="quick (the real demo) or micro (a wiring check)."),
             ) -> None:
        """Run the end-to-end pipeline on SkillMath and the tiny herd, then write report.html."""
        from reasonlab.cli_common import fail
        from reasonlab.pipeline import PRESETS, run_demo

        if preset not in PRESETS:
            fail(f"unknown preset '{preset}'; known: {', '.join(PRESETS)}")
        typer.echo(f"report: {run_demo(out, preset)}")
