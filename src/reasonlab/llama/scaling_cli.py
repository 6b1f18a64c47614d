"""``reasonlab scaling``: the IsoFLOP sweep over the tiny herd and its N*(C) = A·C^α fit."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command


def scaling_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                sets: Optional[list[str]] = SetOpt) -> None:
    """IsoFLOP sweep over model sizes and compute budgets, and the N*(C) = A·C^alpha fit.

    Trains every size at every budget (C = 6·N·D), fits a parabola of validation loss vs
    log N per budget and N*(C) = A·C^alpha with bootstrap intervals; with eval_problems and
    heldout, forecasts the largest budget's loss, answer NLL and accuracy from the others and
    checks them; writes results.json, isoflops.png and forecast.png
    (e.g. --config configs/scaling_quick.yaml)."""
    from reasonlab.llama.scaling import ScalingConfig, run_scaling

    with config_command(ScalingConfig, config, sets) as cfg:
        res = run_scaling(cfg, out)
    typer.echo(f"{'budget C':>10}  {'N* (' + res['param_count'] + ')':>24}  {'D* tokens':>10}  "
               f"{'loss*':>7}  interior")
    for o in res["optimal"]:
        typer.echo(f"{o['budget']:10.3g}  {o['n_opt']:24.4g}  {o['tokens_opt']:10.3g}  "
                   f"{o['loss_opt']:7.4f}  {o['interior']}")
    pred = res["prediction"]
    typer.echo(f"alpha = {res['alpha']:.3f} (tokens: {res['alpha_tokens']:.3f}), "
               f"R^2 = {res['r2']:.3f}; at C = {pred['budget']:.3g}: N* = {pred['n_opt']:.4g}, "
               f"D* = {pred['tokens_opt']:.4g}")
    h = res.get("heldout")
    if h:
        typer.echo(f"held-out budget C = {h['budget']:.3g}: compute-optimal loss predicted "
                   f"{h['loss_predicted']:.4f}, measured "
                   + (f"{h['loss_measured']:.4f}" if h.get("loss_measured") is not None else "-"))
        fc = h.get("forecast")
        if fc:
            lo, hi = fc["accuracy_ci95"]
            measured = h.get("accuracy_measured")
            typer.echo(f"  answer NLL predicted {fc['nll']:.4f}, measured "
                       + (f"{h['nll_measured']:.4f}" if h.get("nll_measured") is not None else "-")
                       + f"; accuracy predicted {fc['accuracy']:.3f} [{lo:.3f}, {hi:.3f}], measured "
                       + (f"{measured:.3f}" if measured is not None else "-"))
    plots = [res["plot"]] + ([res["forecast_plot"]] if res.get("forecast_plot") else [])
    typer.echo(f"wrote {out / 'results.json'} and " + ", ".join(str(out / p) for p in plots))


def register(app: typer.Typer) -> None:
    app.command("scaling")(scaling_cmd)
