"""``reasonlab optimizer``: meta-train the learned optimizer (L3RS) and compare it with baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command, fail

optimizer_app = typer.Typer(
    name="optimizer",
    help="The specialized learned optimizer (L3RS): meta-training and comparison.",
    no_args_is_help=True,
)


def _parse_learned(items: Optional[list[str]]) -> dict[str, str]:
    out = {}
    for item in items or []:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            fail(f"--learned '{item}' must look like LABEL=PATH")
        out[label.strip()] = path.strip()
    return out


@optimizer_app.command("meta-train")
def meta_train_cmd(
    out: Path = OutOpt,
    config: Optional[Path] = ConfigOpt,
    sets: Optional[list[str]] = SetOpt,
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many ES steps "
                                            "(resume later with the same command)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Meta-train L3RS by antithetic ES; writes OUT/meta.safetensors (resumes OUT if it exists)."""
    from reasonlab.optim.es import MetaTrainConfig, meta_train
    from reasonlab.runs import read_json

    with config_command(MetaTrainConfig, config, sets) as cfg:
        meta = meta_train(cfg, out, max_steps=max_steps, progress=progress)
    done = read_json(out / "checkpoints" / "es_state.json")["step"]
    typer.echo(f"{meta.size} meta-parameters after ES step {done}/{cfg.es.steps} -> "
               f"{out / 'meta.safetensors'}")


@optimizer_app.command("compare")
def compare_cmd(
    out: Path = OutOpt,
    config: Optional[Path] = ConfigOpt,
    sets: Optional[list[str]] = SetOpt,
    learned: Optional[list[str]] = typer.Option(
        None, "--learned", "-l", help="LABEL=PATH of a meta run directory or meta file "
        "(repeatable; added to the config's 'learned'; the first is the reference)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Tune every baseline with the meta-training's budget, run all optimizers on held-out seeds
    in every setting, and write table.md, results.json and loss-curve plots into OUT."""
    from reasonlab.optim.compare import CompareConfig, run_compare

    sets = list(sets or []) + [f"learned.{k}={v}" for k, v in _parse_learned(learned).items()]
    with config_command(CompareConfig, config, sets) as cfg:
        run_compare(cfg, out, progress=progress)
    typer.echo((out / "table.md").read_text())


def register(app: typer.Typer) -> None:
    app.add_typer(optimizer_app, name="optimizer")
