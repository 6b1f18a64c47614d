"""CLI: ``reasonlab models list | build NAME | path NAME`` (the model cache) and
``reasonlab composition`` (the composition law on a herd of cached models)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command, fail, user_errors

MicroOpt = typer.Option(False, "--micro", help="The recipe's micro variant (builds in seconds).")

models_app = typer.Typer(help="The model cache: named recipes built on first use.",
                         no_args_is_help=True)


@models_app.command("list")
def list_cmd() -> None:
    """Every recipe, whether it is built (full / micro) and its description."""
    from reasonlab.models.cache import cache_root, is_built
    from reasonlab.models.recipes import get_recipe, recipe_names

    names = recipe_names()
    w = max([len(n) for n in names] + [6])
    typer.echo(f"{'recipe'.ljust(w)}  full   micro  description")
    for n in names:
        r = get_recipe(n)
        full = "built" if is_built(n) else "-"
        micro = "built" if r.micro_config is not None and is_built(n, micro=True) else "-"
        typer.echo(f"{n.ljust(w)}  {full:<5}  {micro:<5}  {r.description}")
    typer.echo(f"cache: {cache_root() / 'models'}")


@models_app.command("build")
def build_cmd(name: str = typer.Argument(..., help="Recipe name."), micro: bool = MicroOpt) -> None:
    """Build NAME (unless it is already in the cache) and print its model folder."""
    from reasonlab.models.cache import CacheError, model_path

    with user_errors():
        try:
            path = model_path(name, micro=micro)
        except CacheError as e:
            fail(str(e))
    typer.echo(str(path))


@models_app.command("path")
def path_cmd(name: str = typer.Argument(..., help="Recipe name."), micro: bool = MicroOpt) -> None:
    """Print NAME's model folder if it is built (exit status 1 if not)."""
    from reasonlab.models.cache import MANIFEST, entry_name, models_dir, verify_entry

    with user_errors():
        entry = models_dir() / entry_name(name, micro)
    why = verify_entry(entry) if (entry / MANIFEST).exists() else "not built"
    if why is not None:
        typer.secho(f"{name}: {why}; build it with: reasonlab models build {name}"
                    + (" --micro" if micro else ""), err=True)
        raise typer.Exit(1)
    typer.echo(str(entry / "model"))


def composition_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                    sets: Optional[list[str]] = SetOpt) -> None:
    """The composition law on a herd: per-skill and per-pair success, pair correlation, and
    the exponent of Y = X^e (table and plots). Models: recipe names or model folders."""
    from reasonlab.evals.composition import CompositionConfig, format_composition, run_composition

    with config_command(CompositionConfig, config, sets) as cfg:
        res = run_composition(cfg, out)
    typer.echo(format_composition(res))
    typer.echo(f"results: {out / 'results.json'}  plots: {', '.join(res['plots'])}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.command("composition")(composition_cmd)
