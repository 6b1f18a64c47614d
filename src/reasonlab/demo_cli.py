"""CLI: ``reasonlab demo`` — the end-to-end demo (:mod:`reasonlab.demo`) on SkillMath and the tiny
herd."""

from __future__ import annotations

import typer

from reasonlab.cli_common import user_errors


def demo_cmd(out: str = typer.Option("runs/demo", "--out", "-o", help="Output folder (resumable)."),
             preset: str = typer.Option("quick", "--preset",
                                        help="quick (the real demo) or micro (a wiring check)."),
             ) -> None:
    """Run the end-to-end pipeline on SkillMath and the tiny herd, then write report.html."""
    from reasonlab.demo import run_demo

    with user_errors():
        report = run_demo(out, preset)
    typer.echo(f"report: {report}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
