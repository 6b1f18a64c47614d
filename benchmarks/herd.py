"""Benchmark: the herd of six-skill SkillMath solvers and the composition law on it.

Takes every herd model from the model cache (building the missing ones: ``reasonlab models build
herd-l`` etc. builds them ahead, in parallel processes if wanted), reads each model's kept
evaluation (``solver_results.json``, ``eval_predictions.jsonl``) and writes
``benchmarks/results/herd.json`` with, per model, its size, training minutes, per-skill
accuracy on held-out one-skill problems, accuracy on 1-, 2- and 3-skill problems, the held-out
template and the held-out skill pairs; the best and the spread over the herd; and the
composition law (:mod:`reasonlab.evals.composition`): the exponent of Y = X^e with a bootstrap
95% interval and the correlation of pair success with s_i * s_j. The plots go to ``--out``.

Timing: ``train_minutes`` is a model's SFT wall time on this machine as it was (shared; the
load average is recorded), ``train_cpu_minutes`` its process CPU time with one thread (what the
same training takes on one idle core); ``herd_cpu_minutes`` sums the CPU minutes of building
every model (data, training and evaluation).

``--quick`` builds and reads the micro variants (seconds each; a wiring check whose
accuracies mean nothing) and writes ``herd_quick.json``.

    python benchmarks/herd.py [--quick] [--threads 1] [--models herd-xs herd-s ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, write_result  # noqa: E402

from reasonlab.models.herd import BEST, HERD as HERD_RECIPES, SEED_REPLICAS  # noqa: E402

HERD = list(HERD_RECIPES)


def model_record(name: str, micro: bool) -> tuple[dict, list[dict]]:
    """One model's benchmark record and its per-problem evaluation records."""
    from reasonlab.models import PREDICTIONS_FILE, RESULTS_FILE
    from reasonlab.models.cache import manifest, model_path
    from reasonlab.runs import read_json, read_jsonl

    path = model_path(name, micro=micro)
    res = read_json(path / RESULTS_FILE)
    preds = list(read_jsonl(path / PREDICTIONS_FILE))
    man = manifest(name, micro=micro) or {}
    return {
        "params": res["sft"]["n_params"],
        "preset": man.get("config", {}).get("sft", {}).get("preset"),
        "sft_steps": res["sft"]["steps"],
        "train_minutes": res["train_minutes"],
        "train_cpu_minutes": res["train_cpu_minutes"],
        "build_cpu_minutes": man.get("build_cpu_s", 0.0) / 60,
        "per_skill": res["per_skill"],
        "acc_1skill": res["heldout_1skill_accuracy"],
        "acc_2skill": res["heldout_2skill_accuracy"],
        "acc_3skill": res["heldout_3skill_accuracy"],
        "heldout_template": res["test_template_accuracy"],
        "heldout_pair": res["test_pair_accuracy"],
        "n": {k: res[f"heldout_{i}skill_n"] for i, k in ((1, "k1"), (2, "k2"), (3, "k3"))},
    }, preds


def best_seeds(best: str, seeds: list[int], seed0: dict, micro: bool) -> dict:
    """The best recipe over training seeds: per seed its accuracies, and per accuracy the mean,
    the Student-t 95% interval over seeds and the lowest seed."""
    from reasonlab.evals.safety import mean_ci95
    from reasonlab.models.herd import seed_replica

    keys = ("acc_1skill", "acc_2skill", "acc_3skill", "heldout_template", "heldout_pair")
    per = {s: (seed0 if s == 0 else model_record(seed_replica(best, s), micro)[0]) for s in seeds}
    out: dict = {"recipe": best, "per_seed": {str(s): {k: r[k] for k in (*keys, "train_cpu_minutes")}
                                               for s, r in per.items()}}
    for k in keys:
        vals = [r[k] for r in per.values() if r[k] is not None]  # None: a micro model, no evaluation
        m, h = mean_ci95(vals) if vals else (None, None)
        out[k] = {"mean": m, "ci95": None if m is None else [m - h, m + h],
                  "min": min(vals) if vals else None}
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    rows = [(s, *(f(r[k]) for k in keys)) for s, r in per.items()]
    print_table(rows, ("seed", "1-skill", "2-skill", "3-skill", "ho tmpl", "ho pair"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="micro variants (a wiring check)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (recorded)")
    ap.add_argument("--models", nargs="+", default=HERD, help="recipe names")
    ap.add_argument("--out", default="runs/bench_herd", help="folder for the plots")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, *SEED_REPLICAS],
                    help="training seeds of the best recipe (herd-l; seed N>0 is herd-l-seedN)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from reasonlab.evals.composition import analyze, format_composition, plot_composition

    t0 = time.time()
    models, preds = {}, {}
    for name in args.models:
        models[name], preds[name] = model_record(name, args.quick)
    comp = analyze({n: [r for r in p if r["set"] in ("test_k1", "test_k2")]
                    for n, p in preds.items()}, n_boot=args.n_boot, seed=0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_composition(comp, out)
    for name, m in models.items():
        m["pair_corr"] = comp["models"][name]["pair_corr"]

    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    skills = sorted({s for m in models.values() for s in m["per_skill"]})
    rows = [(n, m["params"], m["sft_steps"], f"{m['train_minutes']:.1f}",
             f"{m['train_cpu_minutes']:.1f}", f(m["acc_1skill"]), f(m["acc_2skill"]),
             f(m["acc_3skill"]), f(m["heldout_template"]), f(m["heldout_pair"]),
             *[f(m["per_skill"].get(s)) for s in skills]) for n, m in models.items()]
    print_table(rows, ("model", "params", "steps", "train min", "cpu min", "1-skill", "2-skill",
                       "3-skill", "ho tmpl", "ho pair", *skills))
    print()
    print(format_composition(comp))

    best = max(models, key=lambda n: models[n]["acc_1skill"] or 0.0)
    acc1 = [m["acc_1skill"] for m in models.values() if m["acc_1skill"] is not None]
    # the seeds of the herd's best recipe (herd-l, the strongest member by construction)
    seeds = best_seeds(BEST, args.seeds, models[BEST], args.quick) if BEST in models else None
    top = seeds or {k: {"mean": models[best][k]} for k in ("acc_1skill", "acc_2skill")}
    payload = {
        "quick": args.quick, "threads": args.threads,
        "skills": skills, "models": models,
        "best_model": best,
        "best_1skill": top["acc_1skill"]["mean"], "best_2skill": top["acc_2skill"]["mean"],
        "best_seeds": seeds,
        "spread_1skill": [min(acc1), max(acc1)] if acc1 else None,
        "composition_exponent": comp["composition_exponent"],
        "composition_exponent_ci95": comp["composition_exponent_ci95"],
        "pair_corr": comp["pair_corr"], "n_pair_points": comp["n_pair_points"],
        "composition_models": {n: {k: v for k, v in m.items() if k != "pairs"}
                               for n, m in comp["models"].items()},
        "herd_points": comp["herd_points"],
        "seeds": args.seeds if seeds else [0],
        "herd_cpu_minutes": sum(m["build_cpu_minutes"] for m in models.values()),
        "herd_train_cpu_minutes": sum(m["train_cpu_minutes"] for m in models.values()),
        "herd_train_wall_minutes": sum(m["train_minutes"] for m in models.values()),
        "plots": [str(p) for p in plots], "benchmark_seconds": round(time.time() - t0, 1),
        "command": "python benchmarks/herd.py" + (" --quick" if args.quick else ""),
    }
    path = write_result("herd_quick" if args.quick else "herd", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
