"""``reasonlab attack gcg``: GCG (optionally with probe sampling) over AdvBench or a JSONL file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command

attack_app = typer.Typer(name="attack", help="Adversarial attacks on chat models (GCG).",
                         no_args_is_help=True)


@attack_app.command("gcg")
def gcg_cmd(
    out: Path = OutOpt,
    config: Optional[Path] = ConfigOpt,
    sets: Optional[list[str]] = SetOpt,
    threads: int = typer.Option(1, help="torch CPU threads."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Find an adversarial suffix per behaviour (or one universal suffix); resumes OUT."""
    import torch

    from reasonlab.attacks.runner import AttackConfig, run_attack

    torch.set_num_threads(threads)
    with config_command(AttackConfig, config, sets) as cfg:
        res = run_attack(cfg, out, progress=progress)
    asr = lambda v: "n/a" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    typer.echo(f"{res['n_attacked']}/{res['n_behaviors']} behaviours attacked: ASR "
               f"{asr(res['asr_prefix'])} (refusal prefixes), {asr(res['asr_exact'])} (exact "
               f"target), {res['mean_target_forwards'] or 0:.0f} target forwards each -> "
               f"{out / 'results.json'}")


def register(app: typer.Typer) -> None:
    app.add_typer(attack_app)
