"""Benchmark: statistical creativity (arXiv:2401.01623) of tiny models trained on synthetic creators.

For each seed, ``reasonlab.evals.creativity_runner.run_creativity`` draws creators from ``D_C``,
trains a ~45k-parameter Llama conditionally (prompted with the biography ``I[c]``) and marginally
(no prompt) on the first ``n`` creators for each ``n`` (a fixed budget of works split over them),
and scores E0 with the KL evaluator on fresh works of the training creators ("held-out works") and
on unseen creators, and with all three evaluators (KL, discriminator, MAUVE) on a subset of each.

Writes ``benchmarks/results/creativity.json`` (the keys ``e0_conditional``, ``e0_marginal``,
``e0_conditional_unseen``, ``e0_marginal_unseen`` — E0 under KL per n, mean over seeds with a
t-interval and each seed's value —, ``bound``, ``evaluator_agreement``, ``seeds``) and the plot
``benchmarks/results/creativity.png`` (E0 and its bound against n).

    python benchmarks/creativity.py --quick [--threads 1] [--seeds 0 1 2] [--out runs/bench_creativity]

Timings: wall minutes on this machine as it was (shared with other jobs; the load average is
recorded) and process CPU minutes (with ``--threads 1``, what the run takes on one idle core; a
resumed run counts only the work it redid).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, print_table, write_result  # noqa: E402

QUICK = ["ns=[2,8,32]", "unseen_creators=16", "eval_works=48", "sample_creators=2",
         "samples=60"]


def mean_ci(values: list[float]) -> dict:
    """Mean with a 95% t-interval over seeds."""
    from scipy.stats import t

    m = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": m, "ci95": [m, m], "per_seed": values}
    half = t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": m, "ci95": [m - half, m + half], "per_seed": values}


def collect(per_seed: list[dict], ns: list[int]) -> dict:
    """Aggregate the seeds' results into the JSON's keys."""
    from reasonlab.evals.creativity import evaluator_agreement

    def get(res, n, mode, group, ev="kl", key="e0"):
        r = next(x for x in res["results"] if x["n"] == n and x["mode"] == mode)
        return r[group]["e0"][ev][key]

    out: dict = {}
    for mode in ("conditional", "marginal"):
        out[f"e0_{mode}"] = {str(n): mean_ci([get(s, n, mode, "heldout") for s in per_seed])
                             for n in ns}
        out[f"e0_{mode}_unseen"] = {str(n): mean_ci([get(s, n, mode, "unseen") for s in per_seed])
                                    for n in ns}
    out["marginal_minus_conditional"] = {
        group: {str(n): mean_ci([get(s, n, "marginal", g) - get(s, n, "conditional", g)
                                 for s in per_seed]) for n in ns}
        for group, g in (("heldout", "heldout"), ("unseen", "unseen"))}
    bound = {}
    for n in ns:
        row = {}
        for mode in ("conditional", "marginal"):
            upper = [get(s, n, mode, "heldout", key="upper") for s in per_seed]
            unseen = [get(s, n, mode, "unseen") for s in per_seed]
            row[mode] = {
                "e0_heldout": statistics.fmean(get(s, n, mode, "heldout") for s in per_seed),
                "slack": get(per_seed[0], n, mode, "heldout", key="slack"),
                "upper": statistics.fmean(upper),
                "e0_unseen": statistics.fmean(unseen),
                "unseen_upper": statistics.fmean(get(s, n, mode, "unseen", key="upper")
                                                 for s in per_seed),
                "kl_in_range_heldout": all(get(s, n, mode, "heldout", key="in_range")
                                           for s in per_seed),
                # does the bound from the n training creators cover the unseen creators' E0?
                "covers_unseen_seeds": sum(u <= b for u, b in zip(unseen, upper)),
            }
        bound[str(n)] = row
    out["bound"] = bound
    # evaluator agreement: every model (n, mode, seed) scored by the three evaluators on the same
    # creators (the sampled subset of each group)
    agreement = {}
    for group in ("heldout", "unseen"):
        scores: dict[str, list[float]] = {}
        for s in per_seed:
            for r in s["results"]:
                for ev, v in r[group]["e0_sampled_subset"].items():
                    scores.setdefault(ev, []).append(v)
        if len(scores) >= 2 and min(len(v) for v in scores.values()) >= 3:
            agreement[group] = {"spearman": evaluator_agreement(scores),
                                "models": len(next(iter(scores.values())))}
    out["evaluator_agreement"] = agreement
    return out


def plot(agg: dict, ns: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, suffix, title in zip(axes, ("", "_unseen"), ("held-out works of training creators",
                                                         "unseen creators")):
        for mode, color in (("conditional", "tab:blue"), ("marginal", "tab:orange")):
            rows = [agg[f"e0_{mode}{suffix}"][str(n)] for n in ns]
            means = [r["mean"] for r in rows]
            err = [[r["mean"] - r["ci95"][0] for r in rows], [r["ci95"][1] - r["mean"] for r in rows]]
            ax.errorbar(ns, means, yerr=err, fmt="o-", color=color, capsize=3, label=f"{mode} E0")
            key = "upper" if not suffix else "unseen_upper"
            ax.plot(ns, [agg["bound"][str(n)][mode][key] for n in ns], "--", color=color,
                    label=f"{mode} E0 + bound")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("training creators n")
        ax.set_title(title)
    axes[0].set_ylabel("E0 (KL, nats/char)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="n in {2, 8, 32}; 2 creators per group, 60 samples each, for the sample-based evaluators")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_creativity")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra key=value")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    torch.set_num_threads(args.threads)
    from reasonlab.config import load_config
    from reasonlab.evals.creativity_runner import CreativityConfig, run_creativity

    sets = (QUICK if args.quick else []) + [f"threads={args.threads}"] + args.sets
    per_seed, minutes, cpu_minutes, load = [], [], [], []
    t_all = time.time()
    for seed in args.seeds:
        cfg = load_config(CreativityConfig, None, sets + [f"seed={seed}"])
        t0, c0 = time.time(), time.process_time()
        per_seed.append(run_creativity(cfg, args.out / f"seed_{seed}"))
        minutes.append((time.time() - t0) / 60)
        cpu_minutes.append((time.process_time() - c0) / 60)
        load.append(os.getloadavg()[0])
        print(f"seed {seed}: {minutes[-1]:.1f} min wall, {cpu_minutes[-1]:.1f} CPU min "
              f"(load {load[-1]:.1f})", flush=True)
        # the file is rewritten after every seed, so an interrupted benchmark keeps what it did
        report(per_seed, cfg, args, minutes, cpu_minutes, load, time.time() - t_all)


def report(per_seed: list[dict], cfg, args, minutes: list[float], cpu_minutes: list[float],
           load: list[float], wall_s: float) -> None:
    """Print the table and write the JSON and the plot for the seeds done so far."""
    from reasonlab.config import to_dict

    ns = list(cfg.ns)
    agg = collect(per_seed, ns)
    rows = []
    for n in ns:
        c, m = agg["e0_conditional"][str(n)], agg["e0_marginal"][str(n)]
        cu, mu = agg["e0_conditional_unseen"][str(n)], agg["e0_marginal_unseen"][str(n)]
        b = agg["bound"][str(n)]["conditional"]
        rows.append((n, f"{c['mean']:.4f}", f"{m['mean']:.4f}", f"{cu['mean']:.3f}",
                     f"{mu['mean']:.3f}", f"{b['upper']:.3f}", f"{b['slack']:.3f}"))
    print_table(rows, ("n", "E0 cond", "E0 marg", "E0 cond unseen", "E0 marg unseen",
                       "cond bound", "slack"))
    for group, a in agg["evaluator_agreement"].items():
        print(f"evaluator agreement ({group}, {a['models']} models):",
              {k: round(v, 3) for k, v in a["spearman"].items()})

    plot(agg, ns, RESULTS / "creativity.png")
    cfg_dict = to_dict(cfg)
    cfg_dict.pop("seed")
    payload = {
        **agg,
        "seeds": list(args.seeds[:len(per_seed)]),
        "quick": args.quick,
        "threads": args.threads,
        "evaluator": "kl (nats per character, paired cross-entropy minus creator entropy)",
        "eta": cfg.eta,
        "n_params": per_seed[0]["n_params"],
        "config": cfg_dict,
        "minutes_per_seed": minutes,
        "cpu_minutes_per_seed": cpu_minutes,
        "total_minutes": wall_s / 60,
        "load_avg_after_seed": load,
        "plot": "benchmarks/results/creativity.png",
    }
    path = write_result("creativity", payload)
    print(f"-> {path}", flush=True)


if __name__ == "__main__":
    main()
