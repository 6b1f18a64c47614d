"""Benchmark: the tiny SkillMath solver (pretrain + SFT a ~2M-parameter Llama, per-skill accuracy).

Runs the ``train-solver`` pipeline (``--quick``: configs/solver_quick.yaml) into a run directory
(resumed if it exists with the same config), then writes ``benchmarks/results/solver.json`` with
greedy accuracy on held-out 1-, 2- and 3-skill problems, the held-out template and skill pairs,
accuracy per skill on 1-skill problems, the training time and the CPU load while it ran.

Timing: ``train_minutes`` is the wall time of all training stages (pretraining, SFT phases) on
this machine as it was (other jobs share it; the load averages are recorded);
``train_cpu_minutes`` is the process CPU time, which with ``--threads 1`` is what the same
training takes on one idle core — an upper bound for an idle 2-core machine.

With ``--seeds 0 1 2`` the seeds run one after another (``OUT/seed_S``); the JSON's top-level
accuracies are then the means over seeds, ``train_minutes`` the slowest seed's, and ``per_seed``
holds each seed's numbers.

    python benchmarks/solver.py --quick [--threads 1] [--seeds 0 1 2] [--out runs/bench_solver]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


KEYS = ("heldout_1skill_accuracy", "heldout_2skill_accuracy", "test_template_accuracy",
        "test_pair_accuracy", "train_minutes")


def one_seed(config: Path, threads: int, seed: int, out: Path) -> tuple[dict, dict]:
    """Run (or resume) the pipeline for one seed; the benchmark record and the raw results."""
    import torch

    from reasonlab.config import load_config, to_dict
    from reasonlab.runs import read_jsonl
    from reasonlab.solver import SolverConfig, run_solver

    cfg = load_config(SolverConfig, config, [f"threads={threads}", f"seed={seed}"])
    load_before = os.getloadavg()
    res = run_solver(cfg, out)

    def tps(stage: str) -> float | None:
        if not (out / stage / "metrics.jsonl").exists():  # a stage the preset skips
            return None
        vals = [m["tokens_per_s"] for m in read_jsonl(out / stage / "metrics.jsonl")
                if "tokens_per_s" in m]
        return statistics.median(vals) if vals else None

    stages = res["stages"]
    result = {
        "preset": config.stem,
        "heldout_1skill_accuracy": res["heldout_1skill_accuracy"],
        "heldout_2skill_accuracy": res["heldout_2skill_accuracy"],
        "heldout_3skill_accuracy": res["heldout_3skill_accuracy"],
        "heldout_1skill_ci95": res["heldout_1skill_ci95"],
        "heldout_2skill_ci95": res["heldout_2skill_ci95"],
        "heldout_3skill_ci95": res["heldout_3skill_ci95"],
        "heldout_n": {k: res[f"heldout_{k}skill_n"] for k in (1, 2, 3)},
        "test_template_accuracy": res["test_template_accuracy"],
        "test_template_ci95": res["test_template_ci95"],
        "test_pair_accuracy": res["test_pair_accuracy"],
        "test_pair_ci95": res["test_pair_ci95"],
        "chance_1skill": res["chance_1skill"],
        "chance_2skill": res["chance_2skill"],
        "per_skill": res["per_skill"],
        "per_skill_n": res["per_skill_n"],
        "train_minutes": res["train_minutes"],
        "train_cpu_minutes": res["train_cpu_minutes"],
        "total_minutes": res["total_minutes"],
        "stage_minutes": {k: v["wall_s"] / 60 for k, v in stages.items()},
        "stage_cpu_minutes": {k: v["cpu_s"] / 60 for k, v in stages.items()},
        "load_avg_after_stage": {k: v["load_avg"] for k, v in stages.items()},
        "load_avg_at_start": list(load_before),
        "threads": cfg.threads,
        "median_target_tokens_per_s": {s: tps(s) for s in ("pretrain", "sft_k1", "sft")},
        "n_params": res["sft"]["n_params"],
        "pretrain_steps": res["pretrain"]["steps"] if res["pretrain"] else 0,
        "sft_k1_steps": res["sft_k1"]["steps"] if res.get("sft_k1") else 0,
        "sft_steps": res["sft"]["steps"],
        "sft_val_loss": res["sft"]["val_loss"],
        "sft_initial_val_loss": res["sft"].get("initial_val_loss"),
        "seed": cfg.seed,
        "config": to_dict(cfg),
        "machine": {"cpu_cores": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version(), "platform": platform.platform()},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return result, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the quick preset (CPU minutes)")
    ap.add_argument("--config", default=None, help="a solver config (default: the quick preset)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1 is fastest on a busy machine)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="one run per seed, one after another (run directories OUT/seed_S)")
    ap.add_argument("--out", default="runs/bench_solver", help="run directory root (resumed)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "solver.json"))
    args = ap.parse_args()

    from reasonlab.runs import atomic_write_json
    from reasonlab.solver import format_solver_table

    config = Path(args.config) if args.config else ROOT / "configs" / "solver_quick.yaml"
    per_seed = []
    for seed in args.seeds:
        rec, res = one_seed(config, args.threads, seed, Path(args.out) / f"seed_{seed}")
        per_seed.append(rec)
        print(format_solver_table(res))
    # Top level: the mean over seeds of the accuracies, the slowest seed's training time, and the
    # first seed's record for everything else; every seed's record under "per_seed".
    result = dict(per_seed[0])
    for key in KEYS[:4]:
        vals = [r[key] for r in per_seed if r[key] is not None]
        result[key] = statistics.mean(vals) if vals else None
    result["per_skill"] = {k: statistics.mean(r["per_skill"][k] for r in per_seed)
                           for k in per_seed[0]["per_skill"]}
    result["train_minutes"] = max(r["train_minutes"] for r in per_seed)
    result["seeds"] = list(args.seeds)
    result["per_seed"] = [{"seed": r["seed"], **{k: r[k] for k in KEYS},
                           "heldout_2skill_ci95": r["heldout_2skill_ci95"],
                           "chance_2skill": r["chance_2skill"], "per_skill": r["per_skill"]}
                          for r in per_seed]
    atomic_write_json(args.json, result)

    rows = [("heldout 1-skill", result["heldout_1skill_accuracy"], ">= 0.60"),
            ("heldout 2-skill", result["heldout_2skill_accuracy"],
             f"well above chance {result['chance_2skill']:.3f}"),
            ("heldout 3-skill", result["heldout_3skill_accuracy"], ""),
            ("train minutes (wall)", result["train_minutes"], "<= 15 on an idle 2-core CPU")]
    print(f"{'seed':>4s} " + " ".join(f"{k.replace('_accuracy', ''):>22s}" for k in KEYS))
    for r in result["per_seed"]:
        print(f"{r['seed']:>4d} " + " ".join(f"{r[k]:22.3f}" for k in KEYS))
    print(f"mean over {len(per_seed)} seed(s), slowest training time:")
    for name, v, target in rows:
        print(f"{name:22s} {('n/a' if v is None else f'{v:.3f}'):>8s}   {target}")
    print(f"wrote {args.json}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
