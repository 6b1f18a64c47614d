"""Benchmark: does rejection sampling + DPO (Llama 3 post-training) improve the tiny solver?

For each seed: train the tiny SkillMath solver (``--quick``: ``configs/posttrain_solver.yaml``, the
earlier plain-solution solver recipe stopped at 600 SFT steps, so the model is partly right), then run ``posttrain run``
(``configs/posttrain_quick.yaml``: rejection sampling with the step verifier as reward → SFT on the
kept samples → step-level DPO pairs sampled from that model → two DPO runs → their weight
average) and evaluate the SFT model and the post-trained models greedily on the same held-out test problems (the config's ``eval_sets``). Seeds run in parallel processes (one torch
thread each). Writes ``benchmarks/results/posttrain.json``: mean accuracy over seeds of the SFT
model and of the post-trained model with 95% t-intervals over seeds, the paired difference, and
every per-seed number (each with its Wilson interval over problems).

    python benchmarks/posttrain.py --quick [--seeds 0 1 2] [--jobs 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_interval(xs: list[float]) -> list[float]:
    """95% Student-t interval of the mean of ``xs`` (a point when there is one value)."""
    m = statistics.mean(xs)
    if len(xs) < 2:
        return [m, m]
    half = T975.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))
    return [m - half, m + half]


def one_seed(seed: int, out: str, solver_config: str, posttrain_overrides: list[str]) -> dict:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from reasonlab.config import load_config
    from reasonlab.posttrain import PosttrainConfig, run_posttrain
    from reasonlab.solver import SolverConfig, run_solver

    base = Path(out) / f"seed{seed}"
    scfg = load_config(SolverConfig, solver_config, ["threads=1", f"seed={seed}"])
    t0 = time.time()
    sres = run_solver(scfg, base / "solver", progress=False)
    t1 = time.time()
    run = base / "solver"
    pcfg = load_config(PosttrainConfig, ROOT / "configs" / "posttrain_quick.yaml",
                       [f"seed={seed}", "threads=1", f"model={run / 'sft' / 'model'}",
                        f"problems={run / 'data' / 'train.jsonl'}", f"eval_data={run / 'data'}",
                        *posttrain_overrides])
    pres = run_posttrain(pcfg, base / "posttrain", progress=False)
    t2 = time.time()
    return {"seed": seed, "solver": {k: sres[k] for k in (
                "heldout_1skill_accuracy", "heldout_2skill_accuracy", "heldout_3skill_accuracy",
                "train_minutes", "train_cpu_minutes")},
            "posttrain": pres, "solver_minutes": (t1 - t0) / 60, "posttrain_minutes": (t2 - t1) / 60}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="quick presets (CPU minutes)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=3, help="seeds run in parallel")
    ap.add_argument("--solver-config", default=None, help="solver preset (default by --quick)")
    ap.add_argument("--out", default="runs/bench_posttrain", help="run directories (resumed)")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="override a posttrain config key (repeatable)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "posttrain.json"))
    args = ap.parse_args()

    import torch

    from reasonlab.config import load_config, to_dict
    from reasonlab.posttrain import PosttrainConfig
    from reasonlab.runs import atomic_write_json

    solver_config = args.solver_config or str(
        ROOT / "configs" / ("posttrain_solver.yaml" if args.quick else "solver_quick.yaml"))
    t0 = time.time()
    load0 = os.getloadavg()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as ex:
        futs = [ex.submit(one_seed, s, args.out, solver_config, args.sets) for s in args.seeds]
        per_seed = [f.result() for f in futs]

    final = per_seed[0]["posttrain"]["final_model"]
    rows = []
    for r in per_seed:
        m = r["posttrain"]["models"]
        rows.append({
            "seed": r["seed"],
            "sft_accuracy": m["sft"]["pooled"]["accuracy"],
            "sft_ci95": m["sft"]["pooled"]["ci95"],
            "rs_dpo_accuracy": m[final]["pooled"]["accuracy"],
            "rs_dpo_ci95": m[final]["pooled"]["ci95"],
            "n_problems": m["sft"]["pooled"]["n"],
            "by_model": {name: {"pooled": v["pooled"]["accuracy"],
                                **{s: v[s]["accuracy"] for s in v if s != "pooled"}}
                         for name, v in m.items()},
            "rejection": r["posttrain"]["rejection"],
            "dpo": [{k: d[k] for k in ("steps", "pairs", "first_loss", "final_loss", "final_margin",
                                       "final_accuracy")} for d in r["posttrain"]["dpo"]],
            "solver_minutes": r["solver_minutes"], "posttrain_minutes": r["posttrain_minutes"],
        })
    sft = [r["sft_accuracy"] for r in rows]
    post = [r["rs_dpo_accuracy"] for r in rows]
    diff = [b - a for a, b in zip(sft, post)]
    models = list(rows[0]["by_model"])
    pcfg = load_config(PosttrainConfig, ROOT / "configs" / "posttrain_quick.yaml", args.sets)
    result = {
        "sft_accuracy": statistics.mean(sft),
        "rs_dpo_accuracy": statistics.mean(post),
        "ci95": {"sft_accuracy": t_interval(sft), "rs_dpo_accuracy": t_interval(post),
                 "difference": t_interval(diff)},
        "difference": statistics.mean(diff),
        "improved_seeds": sum(d > 0 for d in diff),
        "final_model": final,
        "mean_by_model": {name: statistics.mean(r["by_model"][name]["pooled"] for r in rows)
                          for name in models},
        "mean_by_set": {name: {s: statistics.mean(r["by_model"][name][s] for r in rows)
                               for s in rows[0]["by_model"][name] if s != "pooled"}
                        for name in models},
        "seeds": args.seeds,
        "per_seed": rows,
        "metric": ("greedy accuracy on held-out SkillMath test problems ("
                   + ", ".join(pcfg.eval_sets) + " pooled, up to 300 each); ci95: Student-t over seeds"),
        "solver_preset": Path(solver_config).name,
        "posttrain_config": to_dict(pcfg),
        "wall_minutes": (time.time() - t0) / 60,
        "load_avg_at_start": list(load0),
        "load_avg_at_end": list(os.getloadavg()),
        "machine": {"cpu_cores": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version(), "platform": platform.platform()},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(args.json, result)

    print(f"{'seed':>4s}  {'SFT':>6s}  {'RS+DPO':>6s}  {'diff':>7s}  pairs  " + "  ".join(models))
    for r, d in zip(rows, diff):
        print(f"{r['seed']:4d}  {r['sft_accuracy']:6.3f}  {r['rs_dpo_accuracy']:6.3f}  {d:+7.3f}  "
              f"{r['rejection']['pairs']:5d}  "
              + "  ".join(f"{r['by_model'][m]['pooled']:.3f}" for m in models))
    ci = result["ci95"]
    print(f"mean  {result['sft_accuracy']:6.3f}  {result['rs_dpo_accuracy']:6.3f}  "
          f"{result['difference']:+7.3f}   95% CI: SFT [{ci['sft_accuracy'][0]:.3f}, "
          f"{ci['sft_accuracy'][1]:.3f}], RS+DPO [{ci['rs_dpo_accuracy'][0]:.3f}, "
          f"{ci['rs_dpo_accuracy'][1]:.3f}], diff [{ci['difference'][0]:+.3f}, {ci['difference'][1]:+.3f}]")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
