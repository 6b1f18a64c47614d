"""``reasonlab ntkeval``: the NTKEval kernels of a local model over skills (and wordings)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command


def ntkeval_cmd(
    out: Path = OutOpt,
    config: Optional[Path] = ConfigOpt,
    sets: Optional[list[str]] = SetOpt,
) -> None:
    """Learn each skill (in context and by fine-tuning, the base restored between skills),
    measure every skill's test items, and write the kernels k(s, s') with 95% intervals per
    cell, the diagonal and structure-vs-format contrasts and kernels.png into OUT (resumed if
    it exists)."""
    from reasonlab.evals.ntk import NTKConfig, run_ntkeval

    with config_command(NTKConfig, config, sets) as cfg:
        res = run_ntkeval(cfg, out)
    typer.echo(f"{'method':<6} {'measure':<12} {'diag-offdiag':>14} {'95% CI':>22} "
               f"{'structure-format':>17}")
    for method, by_measure in res["kernels"].items():
        for m, k in by_measure.items():
            d = k.get("diag_minus_offdiag")
            s = k.get("structure_minus_format")
            ci = f"[{d['ci95'][0]:.4g}, {d['ci95'][1]:.4g}]" if d else "-"
            typer.echo(f"{method:<6} {m:<12} {d['value'] if d else float('nan'):>14.4g} "
                       f"{ci:>22} {s['value'] if s else float('nan'):>17.4g}")
    eff = res.get("samples_needed")
    if eff:
        typer.echo(f"items to detect the learning effect ({eff['method']}, of {eff['n_items']}): "
                   f"kernel {eff['kernel']}, accuracy {eff['accuracy']}")
    typer.echo(f"-> {out / 'results.json'}, {out / 'kernels.png'}")


def register(app: typer.Typer) -> None:
    app.command("ntkeval")(ntkeval_cmd)
