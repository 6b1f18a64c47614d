"""The ``reasonlab`` command line: a thin typer layer over the runners.

Each area registers its commands from its own ``cli`` module through one ``register(app)``
function listed in :data:`COMMAND_MODULES` (imports of torch and friends stay inside the command
functions so ``reasonlab --help`` is fast). Every runner command takes ``--out``, ``--config
FILE.yaml`` and repeated ``--set key=value`` overrides in that order and runs inside
:func:`reasonlab.cli_common.config_command` (see that module for the pattern).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="reasonlab",
    help="reasonlab: research on how language models learn to reason.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags shown as flags, one type display everywhere
)

# Modules that define ``register(app)``; each adds its commands or sub-apps.
COMMAND_MODULES = [
    "reasonlab.data.cli",
    "reasonlab.llama.cli",
    "reasonlab.llama.scaling_cli",
    "reasonlab.demo_cli",
    "reasonlab.optim.cli",
    "reasonlab.peft.cli",
    "reasonlab.solver_cli",
    "reasonlab.posttrain.cli",
    "reasonlab.reasoning.cli",
    "reasonlab.models.cli",
    "reasonlab.serve.cli",
    "reasonlab.attacks.cli",
    "reasonlab.evals.creativity_cli",
    "reasonlab.evals.ntk_cli",
    "reasonlab.skills.cli",
    "reasonlab.evals.ptst_cli",
    "reasonlab.evals.passkey_cli",
    "reasonlab.vision.cli",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _plain_help(t: typer.Typer) -> None:
    for group in t.registered_groups:
        if group.typer_instance is not None:
            group.typer_instance.rich_markup_mode = None
            _plain_help(group.typer_instance)


_plain_help(app)


def _version(value: bool) -> None:
    if value:
        from reasonlab import __version__

        typer.echo(f"reasonlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    import sys

    from reasonlab.cli_common import ProgressLines

    if not sys.stderr.isatty() and not isinstance(sys.stderr, ProgressLines):
        sys.stderr = ProgressLines(sys.stderr)  # a log file gets periodic lines, not one huge line
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    try:  # quiet by default: no weight-loading or shard-writing bars from transformers
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    _accept_recipe_names()


def _accept_recipe_names() -> None:
    """Every command that loads a model through ``reasonlab.lm.load`` also takes a model-cache
    recipe name (``herd-m``, ``solver-addsub:micro``): the core stays free of the cache, the
    command line wires it in."""
    from reasonlab.lm.load import register_resolver

    register_resolver(_recipe_folder)


def _recipe_folder(spec: str) -> "Path | None":
    """The cache's folder for a recipe name (built on first use); None for any other spec, so
    the next resolver, or the loader's own error, gets its turn."""
    from reasonlab.models.cache import model_path
    from reasonlab.models.recipes import recipe_names

    name, _, variant = spec.partition(":")
    if name not in recipe_names() or variant not in ("", "micro"):
        return None
    return model_path(name, micro=variant == "micro")


@app.command("show-config")
def show_config(command: list[str] = typer.Argument(..., help="The command, e.g. pretrain or "
                                                               "'posttrain dpo'."),
                config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file."),
                set_: Optional[list[str]] = typer.Option(None, "--set", "-s",
                                                          help="Override a config key: key=value.")
                ) -> None:
    """Print a command's full config as YAML (its defaults, with --config and --set applied)."""
    from reasonlab.cli_common import build_config, config_yaml, fail

    cls = command_config_class(command)
    if cls is None:
        fail(f"'{' '.join(command)}' is not a command that takes a config")
    if config is None and not set_:  # the declared defaults, even where some must be filled in
        typer.echo(config_yaml(declared_defaults(cls)), nl=False)
    else:
        typer.echo(config_yaml(build_config(cls, config, set_)), nl=False)


def declared_defaults(cls: type) -> dict:
    """Every key of config class ``cls`` at its declared default (nested configs included),
    without running validation: a class may require keys its defaults leave empty."""
    import dataclasses

    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            try:
                value = f.default_factory()
            except Exception:  # a nested config whose own defaults do not validate
                ftype = f.type if isinstance(f.type, type) else None
                value = declared_defaults(ftype) if ftype and dataclasses.is_dataclass(ftype) else None
        else:
            value = None
        out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def command_config_class(path: list[str]) -> type | None:
    """The config class a command loads, found by running its function up to the point where it
    loads its config (nothing before that point writes anything)."""
    import inspect

    import reasonlab.cli_common as cc

    t, info = app, None
    for i, name in enumerate(path):
        cmds = {c.name or c.callback.__name__.replace("_", "-"): c for c in t.registered_commands}
        groups = {g.name or g.typer_instance.info.name: g for g in t.registered_groups}
        if name in groups and i < len(path) - 1:
            t = groups[name].typer_instance
            continue
        info = cmds.get(name) if i == len(path) - 1 else None
        break
    if info is None or info.callback is None or info.callback is show_config:
        return None
    fn = info.callback
    if not any("--config" in (getattr(prm.default, "param_decls", None) or ())
               for prm in inspect.signature(fn).parameters.values()):
        return None  # only commands that load a config are probed

    class _Found(Exception):
        def __init__(self, cls: type):
            self.cls = cls

    def capture(cls, *a, **k):
        raise _Found(cls)

    saved = {}
    for g in (vars(cc), fn.__globals__):
        saved[id(g)] = (g, g.get("build_config"))
        if "build_config" in g:
            g["build_config"] = capture
    try:
        args = {}
        for name, prm in inspect.signature(fn).parameters.items():
            d = prm.default
            args[name] = getattr(d, "default", d) if d is not inspect.Parameter.empty else None
            if args[name] is ... or args[name] is None:
                args[name] = [] if "list" in str(prm.annotation) else None
        fn(**args)
    except _Found as f:
        return f.cls
    except (Exception, SystemExit):
        return None
    finally:
        for g, old in saved.values():
            if old is not None:
                g["build_config"] = old
    return None


@app.command("report")
def report(runs: list[str] = typer.Argument(..., help="Run directories."),
           out: str = typer.Option("report.html", "--out", "-o", help="HTML file to write.")) -> None:
    """Turn run directories into one HTML page (tables and embedded plots)."""
    from reasonlab.cli_common import user_errors
    from reasonlab.report import write_report

    with user_errors():
        typer.echo(str(write_report(runs, out)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
