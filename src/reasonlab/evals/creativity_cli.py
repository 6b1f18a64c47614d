"""``reasonlab creativity``: statistical creativity of tiny models trained on synthetic creators."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command


def creativity_cmd(
    out: Path = OutOpt,
    config: Optional[Path] = ConfigOpt,
    sets: Optional[list[str]] = SetOpt,
) -> None:
    """Train tiny Llama models on synthetic creators conditionally (on the biography) and
    marginally for each number of creators n, and write E0 with its bound per evaluator (KL,
    discriminator, MAUVE) on held-out works and unseen creators into OUT (resumed if it exists)."""
    from reasonlab.evals.creativity_runner import CreativityConfig, run_creativity

    with config_command(CreativityConfig, config, sets) as cfg:
        summary = run_creativity(cfg, out)
    evs = [e for e in ("kl", "discriminator", "mauve") if e in cfg.evaluators]
    head = ["n", "mode"] + [f"{g}_{e}" for g in ("heldout", "unseen") for e in evs]
    typer.echo("  ".join(f"{h:>18}" for h in head))
    for row in summary["rows"]:
        cells = [str(row["n"]), row["mode"]] + [
            f"{row[h]:.4f}" if row.get(h) is not None else "-" for h in head[2:]]
        typer.echo("  ".join(f"{c:>18}" for c in cells))
    typer.echo(f"-> {out / 'results.json'}, {out / 'e0_vs_n.png'}")


def register(app: typer.Typer) -> None:
    app.command("creativity")(creativity_cmd)
