"""NTKEval on a herd model: both kernels, diagonal vs off-diagonal, structure vs format, and how
many test items the probability kernel needs to detect a learning effect against the accuracy
difference on the same items.

Per seed (its own test and skill data, its own sampling noise) the model learns each condition
(a SkillMath skill in one wording) in context and by a few fine-tuning steps, and every
condition's items are measured (teacher-forced everywhere; sampled, k per item, on the diagonal
where the learning effect is read). Contrasts pool the seeds: their bootstrap replicates are
averaged replicate by replicate. Items needed: the fewest test items whose mean learning effect
(each item after learning its own condition) has the right sign in 95% of resamples.

    python benchmarks/ntkeval.py --quick            # 4 skills x 2 wordings, 16 items, 3 seeds
    python benchmarks/ntkeval.py                    # the herd's 6 skills x 2 wordings, 24 items
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import RESULTS, print_table, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 skills, 16 items per condition")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--model", default="herd1-m")
    ap.add_argument("--runs", default="runs/bench-ntkeval", help="run folders (resumable)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from reasonlab.evals import ntk
    from reasonlab.lm.local import LocalLM
    from reasonlab.models.cache import model_path

    skills = ["add", "sub", "rem", "cmp"] if args.quick else ["add", "sub", "mul", "div", "rem",
                                                              "cmp"]
    base = dict(model=args.model, skills=skills, wordings=[0, 1], n_eval=16 if args.quick else 24,
                n_train=32, k=4, sample_cells="diagonal", max_new_tokens=120, ft_steps=5,
                ft_lr=3e-4, threads=args.threads, bootstrap=1000)
    lm = LocalLM.from_pretrained(model_path(args.model), device="cpu", batch_size=32)
    t0 = time.time()
    per_seed, reps, kern_vals = [], {}, {}
    effects = {"ft": ([], []), "icl": ([], [])}
    for seed in args.seeds:
        cfg = ntk.NTKConfig(**base, seed=seed)
        _, conds, measured = ntk.measure_run(cfg, Path(args.runs) / f"seed{seed}", lm)
        kernels, r = ntk.summarize_kernels(measured, cfg, conds, seed)
        for key, v in r.items():
            reps.setdefault(key, []).append(v)
        for method in cfg.methods:
            kern_vals.setdefault(method, []).append(np.asarray(kernels[method]["token_prob"]["value"]))
            effects[method][0].append(ntk.learning_effects(measured, conds, method, "token_prob"))
            effects[method][1].append(ntk.learning_effects(measured, conds, method, "accuracy"))
        per_seed.append({"seed": seed, "conditions": [c.name for c in conds],
                         "kernels": kernels,
                         "samples_needed": {m: ntk.efficiency(measured, conds, cfg, m)
                                            for m in cfg.methods}})
        print(f"seed {seed} done after {time.time() - t0:.0f} s", flush=True)
    names = per_seed[0]["conditions"]

    def pooled(method: str, measure: str, what: str) -> dict:
        key = f"{method}:{measure}:{what}"
        vals = [s["kernels"][method][measure][what]["value"] for s in per_seed]
        return {"value": float(np.mean(vals)), "ci95": ntk.interval(np.mean(reps[key], axis=0)),
                "per_seed": vals, "method": method, "measure": measure}

    contrasts = {f"{m}_{w}_{meas}": pooled(m, meas, w) for m in ("icl", "ft")
                 for meas in ("token_prob", "logprob", "seq_prob")
                 for w in ("diag_minus_offdiag", "structure_minus_format")}
    # sample efficiency: the seeds' items pooled (each seed's truth sign is the pooled kernel's)
    eff = {}
    for method, (kern, acc) in effects.items():
        k_all, a_all = np.concatenate(kern), np.concatenate(acc)
        sign = float(np.sign(k_all.mean()))
        eff[method] = {"n_items": int(len(k_all)), "truth_sign": sign,
                       "kernel": ntk.samples_needed(k_all, truth_sign=sign, seed=0),
                       "accuracy": ntk.samples_needed(a_all, truth_sign=sign, seed=0),
                       "kernel_mean": float(k_all.mean()), "accuracy_mean": float(a_all.mean()),
                       "accuracy_items_nonzero": int(np.count_nonzero(a_all))}
    mean_kernels = {m: np.mean(v, axis=0).tolist() for m, v in kern_vals.items()}
    plot = ntk.plot_kernels({m: {"token_prob": {"value": v}} for m, v in mean_kernels.items()},
                            names, RESULTS / "ntkeval.png", "token_prob",
                            title=f"NTKEval on {args.model}, mean of seeds {args.seeds}")

    rows = [(k, f"{v['value']:+.4f}", f"[{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]")
            for k, v in contrasts.items()]
    print_table(rows, ("contrast", "value", "95% CI (pooled seeds)"))
    print()
    print_table([(m, e["n_items"], e["kernel"], e["accuracy"], f"{e['kernel_mean']:+.4f}",
                  f"{e['accuracy_mean']:+.4f}") for m, e in eff.items()],
                ("method", "items", "needed: kernel", "needed: accuracy", "kernel effect",
                 "accuracy effect"))
    ft_eff = eff["ft"]
    payload = {
        "quick": args.quick, "threads": args.threads, "model": args.model, "config": base,
        "skills": skills, "wordings": base["wordings"], "conditions": names,
        "seeds": args.seeds,
        "primary_measure": "token_prob (exp of the mean per-token log-probability of the "
                           "reference solution)",
        "icl_diag_minus_offdiag": contrasts["icl_diag_minus_offdiag_token_prob"],
        "ft_diag_minus_offdiag": contrasts["ft_diag_minus_offdiag_token_prob"],
        "structure_minus_format": contrasts["icl_structure_minus_format_token_prob"],
        "ft_structure_minus_format": contrasts["ft_structure_minus_format_token_prob"],
        "contrasts": contrasts,
        "samples_needed_kernel": ft_eff["kernel"],
        "samples_needed_accuracy": ft_eff["accuracy"],
        "samples_needed_note": "fine-tuning learning effect, items pooled over seeds; null = "
                               f"not reached within the {ft_eff['n_items']} items",
        "samples_needed": eff,
        "kernels_mean_over_seeds": {"conditions": names, **mean_kernels},
        "per_seed": per_seed,
        "heatmap": plot.name,
        "wall_s": round(time.time() - t0, 1),
    }
    print(f"\n-> {write_result('ntkeval', payload)} ({time.time() - t0:.0f} s, loaded shared machine)")


if __name__ == "__main__":
    main()
