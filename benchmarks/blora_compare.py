"""Benchmark: Bayesian-LoRA vs PEFT LoRA (r=8) vs PEFT AdaLoRA fine-tuning a solver to a new skill.

The base is a six-skill herd solver from the model cache (``--base herd1-m``, built on first use;
add, sub, mul, div, rem, cmp) or any model folder; ``--base configs/blora_base.yaml`` instead
trains the older add-only base (a solver config, trained once into ``--base-out`` and reused).
Every method then fine-tunes it to a skill it never saw with the same problems, steps, batch,
learning rate, data order and seeds (``configs/blora_compare.yaml``: ``rate`` in nine wordings,
300 steps, 300 test problems; ``--quick``: 150 and 150), and is scored greedily on the same
held-out problems. B-LoRA's adapter is exported to PEFT LoRA and reloaded with
``PeftModel.from_pretrained``; the largest logit difference is recorded.

Writes ``benchmarks/results/blora_compare.json``: mean accuracy per method with 95% t-intervals
over seeds, B-LoRA minus LoRA (paired by seed), relative BOPs reduction (vs LoRA r=8 at 32 bits),
effective ranks and bit-widths per module, trainable parameters, wall time, the PEFT export
difference, seeds, the machine and the date.

    python benchmarks/blora_compare.py --quick [--seeds 0 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer fine-tuning steps and test problems")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--base", default="herd1-m",
                    help="model-cache recipe, model folder, or a solver YAML config to train")
    ap.add_argument("--config", default=str(ROOT / "configs" / "blora_compare.yaml"))
    ap.add_argument("--base-out", default="runs/blora_base", help="base solver run (resumed)")
    ap.add_argument("--out", default=None, help="comparison run directory (resumed)")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="override a comparison config key (repeatable)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import logging

    import torch

    from _common import print_table, write_result
    from reasonlab.config import load_config
    from reasonlab.peft.compare import CompareConfig, format_table, run_compare
    from reasonlab.solver import SolverConfig, run_solver

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    if args.base.endswith((".yaml", ".yml")):  # a solver config: train the base (resumed)
        scfg = load_config(SolverConfig, args.base, [f"threads={args.threads}"])
        base = run_solver(scfg, args.base_out, progress=False)
        base_path = Path(args.base_out) / "sft" / "model"
        base_info = {"config": str(Path(args.base).resolve().relative_to(ROOT)),
                     "trained_skills": scfg.data.skills,
                     "heldout_1skill_accuracy": base["heldout_1skill_accuracy"],
                     "train_minutes": base["train_minutes"]}
    else:  # a model-cache recipe or a model folder
        from reasonlab.models.cache import resolve_model
        from reasonlab.runs import read_json

        base_path = resolve_model(args.base)
        res_file = base_path / "solver_results.json"
        base = read_json(res_file) if res_file.is_file() else {}
        base_info = {"model": args.base, "trained_skills": sorted(base.get("per_skill") or {}),
                     "per_skill": base.get("per_skill"),
                     "heldout_1skill_accuracy": base.get("heldout_1skill_accuracy"),
                     "train_minutes": base.get("train_minutes")}
    base_min = (time.time() - t0) / 60
    quick = ["steps=150", "eval_limit=150"] if args.quick else []
    seeds = "[" + ",".join(str(s) for s in args.seeds) + "]"
    ccfg = load_config(CompareConfig, args.config,
                       [f"model={base_path}", f"seeds={seeds}",
                        f"threads={args.threads}", *quick, *args.sets])
    out = args.out or f"runs/bench_blora{'_quick' if args.quick else ''}"
    t1 = time.time()
    res = run_compare(ccfg, out)
    minutes = (time.time() - t1) / 60

    print(format_table(res))
    rows = []
    for r in res["runs"]:
        rows.append((r["method"], r["seed"], f"{r['accuracy']:.3f}", r["trainable_params"],
                     f"{r['train_seconds']:.0f}", f"{r.get('relative_bops_reduction', float('nan')):.3f}"))
    print_table(rows, ("method", "seed", "accuracy", "trainable", "train s", "BOPs reduction"))
    keys = ("lora_accuracy", "adalora_accuracy", "blora_accuracy", "lora_accuracy_ci95",
            "adalora_accuracy_ci95", "blora_accuracy_ci95", "blora_minus_lora",
            "blora_minus_lora_ci95", "relative_bops_reduction", "relative_bops_reduction_ci95",
            "relative_bops_reduction_per_seed", "blora_relative_bops", "effective_ranks",
            "bit_widths", "trainable_params", "wall_seconds", "seeds", "peft_export_max_abs_diff")
    payload = {k: res.get(k) for k in keys}
    payload.update({
        "accuracy_per_seed": {m: v["accuracy_per_seed"] for m, v in res["methods"].items()},
        "adalora_effective_ranks": {f"seed{r['seed']}": r.get("effective_ranks") for r in res["runs"]
                                    if r["method"] == "adalora"},
        "base_model": base_info,
        "task": res["task"], "steps": ccfg.steps, "batch_size": ccfg.batch_size, "lr": ccfg.lr,
        "target_modules": ccfg.target_modules, "blora_config": vars(ccfg.blora),
        "quick": args.quick, "threads": args.threads, "compare_minutes": minutes,
        "base_minutes_this_call": base_min,
        "note": "wall times measured on a shared, loaded 2-core machine",
        "runs": res["runs"],
    })
    name = "blora_compare"
    print("wrote", write_result(name, payload))


if __name__ == "__main__":
    main()
