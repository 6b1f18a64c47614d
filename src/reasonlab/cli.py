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

import typer

app = typer.Typer(
    name="reasonlab",
    help="reasonlab: research on how language models learn to reason.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
    "reasonlab.models.cli",
    "reasonlab.serve.cli",
    "reasonlab.attacks.cli",
    "reasonlab.evals.creativity_cli",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
