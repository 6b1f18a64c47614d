"""``reasonlab passkey``: passkey (needle-in-a-haystack) accuracy by context length and depth."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command


def passkey_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                sets: Optional[list[str]] = SetOpt) -> None:
    """Plant a key at each depth of filler text of each context length, ask the model for it,
    and write the accuracy table (table.txt), passkey.png and results.json into OUT."""
    from reasonlab.evals.passkey import PasskeyConfig, format_table, run_passkey

    with config_command(PasskeyConfig, config, sets) as cfg:
        res = run_passkey(cfg, out)
    typer.echo(format_table(res))
    typer.echo(f"-> {out / 'results.json'}, {out / 'passkey.png'}")


def register(app: typer.Typer) -> None:
    app.command("passkey")(passkey_cmd)
