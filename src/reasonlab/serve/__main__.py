"""``python -m reasonlab.serve MODEL [--port N] ...``: the serve command on its own."""

import typer

from reasonlab.serve.cli import register

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
register(app)

if __name__ == "__main__":
    app()
