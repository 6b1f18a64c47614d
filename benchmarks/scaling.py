"""IsoFLOP scaling law and Llama 3's two-stage forecast, checked on a held-out budget.

Trains every size at every compute budget (C = 6·N·D, N = non-embedding parameters) with the
project's pretraining loop, fits a parabola of validation loss against log N per budget and
N*(C) = A·C^alpha through the minima (bootstrap intervals over the sweep's points), scores every
model on SkillMath problems (answer NLL, greedy accuracy) and, with the largest budget held out,
forecasts its compute-optimal loss, answer NLL and accuracy from the smaller budgets and compares
them with what its runs measure. Writes ``benchmarks/results/scaling.json`` (alpha with
alpha_ci95, r2, budgets, sizes, the optimal N per budget, heldout_* predicted vs measured, the
machine and the date) and copies ``forecast.png`` next to it. The run directory is resumed.

    python benchmarks/scaling.py --quick        # configs/scaling_quick.yaml (an estimated 20-35 min on one idle core)
    python benchmarks/scaling.py                # ScalingConfig defaults (larger budgets)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the CPU preset configs/scaling_quick.yaml")
    ap.add_argument("--out", default=None, help="run directory (default runs/bench_scaling_<preset>_<hash>)")
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (the config's "
                    "threads; default 1)")
    ap.add_argument("--reanalyze", action="store_true",
                    help="no training: redo the held-out forecast from the points stored in "
                         "benchmarks/results/scaling.json (with this version's fits) and update it")
    ap.add_argument("--check-budget", type=float, default=None, metavar="C",
                    help="a forecast check beyond the sweep: predict budget C from every stored "
                         "point (written to the result file first), then train the sizes at C "
                         "and compare")
    ap.add_argument("--no-train", action="store_true",
                    help="with --check-budget: write the forecast only (train later)")
    args = ap.parse_args()

    import logging

    from reasonlab.config import load_config, to_dict
    from reasonlab.llama.scaling import ScalingConfig, run_scaling

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.reanalyze:
        return reanalyze(args.set)
    if args.check_budget:
        return check_budget(args.check_budget, args.set, args.out, train=not args.no_train)
    cfg_path = ROOT / "configs" / "scaling_quick.yaml" if args.quick else None
    sets = list(args.set) + ([f"threads={args.threads}"] if args.threads is not None else [])
    cfg = load_config(ScalingConfig, cfg_path, sets)
    if args.out:
        out = Path(args.out)
    else:  # one directory per config, so a changed preset never collides with an old run
        import hashlib

        from reasonlab.runs import to_json

        digest = hashlib.sha256(to_json(to_dict(cfg)).encode()).hexdigest()[:8]
        out = ROOT / "runs" / f"bench_scaling_{'quick' if args.quick else 'default'}_{digest}"
    res = run_scaling(cfg, out)

    rows = [(p["budget"], p["size"], f"{p['n_params']:.3g}", p["steps"], p["tokens"],
             f"{p['val_loss']:.4f}", p.get("wall_s")) for p in res["points"]]
    print_table([(f"{r[0]:.2g}",) + r[1:] for r in rows],
                ("C", "size", "N", "steps", "tokens", "val_loss", "wall_s"))
    print()
    print_table([(f"{o['budget']:.2g}", f"{o['n_opt']:.4g}", f"{o['tokens_opt']:.4g}", f"{o['loss_opt']:.4f}",
                  o["interior"], f"{o['parabola_r2']:.3f}") for o in res["optimal"]],
                ("C", "N*", "D*", "loss*", "interior", "parabola R2"))
    pred = res["prediction"]
    ci = res.get("alpha_ci95") or [float("nan")] * 2
    print(f"\nalpha = {res['alpha']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]  (tokens: {res['alpha_tokens']:.3f})  "
          f"R2 = {res['r2']:.3f}  A = {res['A']:.4g}; at C = {pred['budget']:.2g}: N* = {pred['n_opt']:.4g}, "
          f"D* = {pred['tokens_opt']:.4g}; wall {res['wall_s']:.0f} s")
    heldout = heldout_keys(res.get("heldout") or {})
    payload = {
        "preset": "quick" if args.quick else "default",
        "alpha": res["alpha"], "r2": res["r2"], "A": res["A"], "alpha_tokens": res["alpha_tokens"],
        "alpha_ci95": res.get("alpha_ci95"), "alpha_tokens_ci95": res.get("alpha_tokens_ci95"),
        "n_bootstrap": res.get("n_bootstrap"),
        "param_count": res["param_count"], "budgets": res["budgets"], "sizes": res["sizes"],
        "optimal": res["optimal"], "excluded_budgets": res["excluded_budgets"],
        "prediction": pred, "points": res["points"], "seed": res["seed"],
        "wall_s": res["wall_s"], "train_wall_s": round(sum(p.get("wall_s") or 0 for p in res["points"]), 1),
        "threads": cfg.threads, "n_eval_problems": res.get("n_eval_problems"),
        "config": to_dict(cfg), **heldout,
        "plot": "scaling_forecast.png" if res.get("forecast_plot") else None,
        "command": "python benchmarks/scaling.py" + (" --quick" if args.quick else ""),
    }
    if res.get("forecast_plot"):
        import shutil

        shutil.copyfile(out / res["forecast_plot"], ROOT / "benchmarks" / "results" / "scaling_forecast.png")
    path = write_result("scaling", payload)
    print(f"wrote {path.relative_to(ROOT)}")


def stored_result(sets: list[str]):
    """The result file's path, its contents and its sweep config with ``--set`` overrides."""
    import json

    from reasonlab.config import from_dict, parse_overrides
    from reasonlab.llama.scaling import ScalingConfig

    path = ROOT / "benchmarks" / "results" / "scaling.json"
    res = json.loads(path.read_text())
    return path, res, from_dict(ScalingConfig, {**res["config"], **parse_overrides(sets)})


def reanalyze(sets: list[str]) -> None:
    """The held-out check again on the stored points (same config, plus ``--set`` overrides)."""
    from reasonlab.config import to_dict
    from reasonlab.llama.scaling import heldout_check

    path, old, cfg = stored_result(sets)
    plot = ROOT / "benchmarks" / "results" / "scaling_forecast.png"
    h = heldout_check(cfg, old["points"], old.get("n_eval_problems") or 0, plot)
    first = old.get("reanalyzed") or {}  # a second reanalysis keeps where the runs were measured
    new = {**old, **heldout_keys(h), "config": to_dict(cfg),
           "reanalyzed": {"command": "python benchmarks/scaling.py --reanalyze"
                          + "".join(f" --set {kv}" for kv in sets),
                          "measured_by": first.get("measured_by", old.get("command")),
                          "measured_date": first.get("measured_date", old.get("date")),
                          "measured_machine": first.get("measured_machine", old.get("machine"))}}
    write_result("scaling", new)
    print(f"wrote {path.relative_to(ROOT)}")


def check_budget(budget: float, sets: list[str], out: str | None, train: bool = True) -> None:
    """Pre-registered forecast check: both loss forecasts at ``budget`` from all the stored points
    go into ``forecast_check`` of the result file before any training; then the sweep's sizes are
    trained at ``budget`` (resumable) and the measurement is added beside the forecast."""
    import datetime as dt

    from reasonlab.llama.scaling import envelope_forecast, fit_isoflop, fit_power_law, train_budget
    from reasonlab.runs import atomic_write_json

    path, res, cfg = stored_result(sets)
    check = res.get("forecast_check") or {}
    if check.get("budget") != budget:
        env = envelope_forecast(res["points"], budget, seed=cfg.seed)
        opt = [o for o in res["optimal"] if o.get("in_fit", True)]
        law = fit_power_law([o["budget"] for o in opt], [o["loss_opt"] for o in opt])
        check = {"budget": budget, "fit_budgets": sorted({p["budget"] for p in res["points"]}),
                 "predicted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "envelope": env.loss_dict(),
                 "power_law": {"loss_predicted": float(law(budget))},
                 "status": "predicted",
                 "command": "python benchmarks/scaling.py --check-budget "
                            f"{budget:g}" + "".join(f" --set {kv}" for kv in sets)}
        res["forecast_check"] = check
        atomic_write_json(path, res)
    print(f"forecast at C = {budget:.3g}: envelope {check['envelope']['loss_predicted']:.4f} "
          f"{check['envelope']['loss_ci95']} ({check['envelope']['size']}), power law "
          f"{check['power_law']['loss_predicted']:.4f}; written to {path.relative_to(ROOT)}")
    if not train:
        return
    run_dir = Path(out) if out else ROOT / "runs" / f"bench_scaling_check_{budget:.3g}"
    pts = train_budget(cfg, run_dir, budget)
    check["points"] = pts
    measured, how = min(p["val_loss"] for p in pts), "best run"
    if len(pts) >= 3:
        f = fit_isoflop(budget, [p["n_params"] for p in pts], [p["val_loss"] for p in pts])
        if f.interior:  # a minimum outside the trained sizes is an extrapolation: keep the best run
            measured, how = f.loss_opt, "parabola minimum"
    per = check["envelope"]["per_size"]
    check["per_size_measured"] = {
        p["size"]: {"measured": p["val_loss"], "predicted": per[p["size"]]["value"],
                    "rel_error": abs(per[p["size"]]["value"] - p["val_loss"]) / p["val_loss"]}
        for p in pts if p["size"] in per}
    check.update(loss_measured=measured, measured_as=how, status="measured",
                 best_run=min(pts, key=lambda p: p["val_loss"])["size"])
    for k in ("envelope", "power_law"):
        check[k]["loss_rel_error"] = abs(check[k]["loss_predicted"] - measured) / measured
    res["forecast_check"] = check
    atomic_write_json(path, res)
    print_table([(k, f"{check[k]['loss_predicted']:.4f}", f"{measured:.4f}",
                  f"{100 * check[k]['loss_rel_error']:.2f}%") for k in ("envelope", "power_law")],
                ("forecast", "predicted", "measured", "error"))


def heldout_keys(h: dict) -> dict:
    """The result file's ``heldout_*`` keys from :func:`heldout_check`'s dict (and print them)."""
    heldout: dict = {}
    if h:
        fc = h.get("forecast") or {}
        heldout = {
            "heldout_budget": h["budget"],
            "heldout_fit_budgets": h["fit_budgets"],
            "heldout_alpha": h["alpha"], "heldout_alpha_ci95": h["alpha_ci95"],
            "heldout_loss_method": h.get("loss_method", "power_law"),
            "heldout_loss_predicted": h["loss_predicted"], "heldout_loss_ci95": h["loss_ci95"],
            "heldout_loss_power_law": h.get("power_law"),
            "heldout_loss_envelope": h.get("envelope"),
            "heldout_loss_backtest": h.get("backtest"),
            "heldout_loss_measured": h["loss_measured"],
            "heldout_loss_rel_error": h.get("loss_rel_error"),
            "heldout_loss_within_2pct": (h.get("loss_rel_error") is not None
                                         and h["loss_rel_error"] <= 0.02),
            "heldout_n_opt_predicted": h["n_opt_predicted"], "heldout_n_opt_ci95": h["n_opt_ci95"],
            "heldout_n_opt_measured": h["n_opt_measured"],
            "heldout_nll_predicted": fc.get("nll"), "heldout_nll_ci95": fc.get("nll_ci95"),
            "heldout_nll_measured": h.get("nll_measured"),
            "heldout_accuracy_predicted": ({"value": fc["accuracy"], "ci95": fc["accuracy_ci95"]}
                                           if fc else None),
            "heldout_accuracy_measured": h.get("accuracy_measured"),
            "heldout_accuracy_in_ci95": h.get("accuracy_in_ci95"),
            "heldout_best_model": h.get("best_model"),
            "forecast": {k: h.get(k) for k in ("loss_law", "nll_law", "sigmoid", "nll_opt",
                                               "forecast_error") if k in h},
        }
        print()
        meas = f"{h['loss_measured']:.4f}" if h.get("loss_measured") is not None else "-"
        rows = [(f"val loss (compute-optimal), {name}", f"{d['loss_predicted']:.4f}",
                 "[{:.4f}, {:.4f}]".format(*d["loss_ci95"]) if d.get("loss_ci95") else "-", meas)
                for name, d in (("power law", h.get("power_law") or {}),
                                ("envelope", h.get("envelope") or {})) if "loss_predicted" in d]
        rows += [
                ("N* (non-embedding)", f"{h['n_opt_predicted']:.4g}",
                 "[{:.4g}, {:.4g}]".format(*h["n_opt_ci95"]) if h.get("n_opt_ci95") else "-",
                 f"{h['n_opt_measured']:.4g}" if h.get("n_opt_measured") is not None else "-")]
        if fc:
            rows += [("answer NLL", f"{fc['nll']:.4f}", "[{:.4f}, {:.4f}]".format(*fc["nll_ci95"]),
                      f"{h['nll_measured']:.4f}" if h.get("nll_measured") is not None else "-"),
                     ("greedy accuracy", f"{fc['accuracy']:.3f}",
                      "[{:.3f}, {:.3f}]".format(*fc["accuracy_ci95"]),
                      f"{h['accuracy_measured']:.3f}" if h.get("accuracy_measured") is not None else "-")]
        print(f"held-out budget C = {h['budget']:.3g} (fit on {len(h['fit_budgets'])} smaller budgets)")
        print_table(rows, ("quantity", "predicted", "95% interval", "measured"))
    return heldout


if __name__ == "__main__":
    main()
