"""``reasonlab demo``: the end-to-end pipeline on SkillMath and the tiny herd."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(out: str = typer.Option("runs/demo", "--out", "-o", help="Output folder.")) -> None:
        """Run the end-to-end pipeline (tokenizer, tiny Llama, generation, report)."""
        from reasonlab.pipeline import run_demo

        run_demo(out)
