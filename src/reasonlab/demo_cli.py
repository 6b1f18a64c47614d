"""CLI: ``reasonlab demo`` — every method end to end on SkillMath and the tiny herd
(:mod:`reasonlab.demo`), then one HTML report."""

from __future__ import annotations

from typing import Optional

import typer

from reasonlab.cli_common import fail, user_errors


def _names(values: Optional[list[str]]) -> list[str]:
    """Stage names from repeated options or comma-separated lists."""
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def demo_cmd(out: Optional[str] = typer.Option(None, "--out", "-o",
                                               help="Output folder (resumable; default runs/demo, "
                                                    "runs/demo-quick with --quick)."),
             quick: bool = typer.Option(False, "--quick", help="The smallest settings (minutes)."),
             only: Optional[list[str]] = typer.Option(None, "--only",
                                                      help="Run only these stages (repeat or "
                                                           "comma-separate)."),
             skip: Optional[list[str]] = typer.Option(None, "--skip",
                                                      help="Leave these stages out."),
             list_stages: bool = typer.Option(False, "--list", help="List the stages and exit."),
             threads: int = typer.Option(1, "--threads", help="Torch threads."),
             ) -> None:
    """Run every method on SkillMath and the tiny herd (each stage cached in the output folder,
    so a rerun skips finished stages), then write report.html. Exits 1 if a stage failed."""
    import torch

    from reasonlab.demo import STAGES, run_demo

    if list_stages:
        for s in STAGES:
            typer.echo(f"{s.name:<12} {s.method}")
        return
    if threads < 1:
        fail(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    folder = out or ("runs/demo-quick" if quick else "runs/demo")
    with user_errors():
        report, summary = run_demo(folder, quick, only=_names(only), skip=_names(skip))
    failed = {n: s.get("error", "") for n, s in summary["stages"].items() if s["state"] == "failed"}
    typer.echo(f"report: {report}")
    if failed:
        for n, e in failed.items():
            typer.secho(f"stage {n} failed: {e}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
