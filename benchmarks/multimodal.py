"""Compositional image adapter (Llama 3, arXiv:2407.21783 §7) on a frozen tiny solver.

Per seed: stage 1 trains the encoder, stage 2 the cross-attention adapter on visual SkillMath;
held-out visual problems (unseen handwriting) are then answered with the image (the adapter),
as text by the frozen solver (the ceiling) and with no image (the floor). Also: the maximum
absolute text-only logit difference from the solver, trainable parameters and training time of
each stage. Writes benchmarks/results/multimodal.json.

    python benchmarks/multimodal.py --quick --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, write_result  # noqa: E402


def interval(xs: list[float]) -> list[float]:
    """Mean ± t(0.975, n-1) · s / sqrt(n) over seeds."""
    import numpy as np
    from scipy import stats

    a = np.asarray(xs, float)
    if len(a) < 2:
        return [float(a.mean())] * 2
    h = stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))
    return [float(a.mean() - h), float(a.mean() + h)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and problems")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--solver", default="herd1-l")
    ap.add_argument("--out", default=None, help="run folders (default: a temporary folder)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from reasonlab.config import from_dict
    from reasonlab.vision.runner import MultimodalConfig, run_multimodal

    torch.set_num_threads(args.threads)
    settings = ({"encoder": {"steps": 300}, "adapter": {"steps": 200}, "eval_limit": 100,
                 "data": {"n_train": 1000, "n_test": 100}} if args.quick else
                {"encoder": {"steps": 800}, "adapter": {"steps": 600}, "eval_limit": 200})
    root = Path(args.out or tempfile.mkdtemp(prefix="multimodal-"))
    per_seed = []
    for seed in args.seeds:
        cfg = from_dict(MultimodalConfig, {"solver": args.solver, "seed": seed,
                                           "threads": args.threads, **settings})
        res = run_multimodal(cfg, root / f"seed{seed}", progress=False)
        per_seed.append(res)
        print(f"seed {seed}: visual {res['visual_accuracy']:.3f} text {res['text_ceiling_accuracy']:.3f}"
              f" none {res['no_image_accuracy']:.3f} read {res['visual_operand_read']:.3f}", flush=True)

    keys = ["visual_accuracy", "text_ceiling_accuracy", "no_image_accuracy",
            "visual_operand_read", "text_operand_read", "no_image_operand_read"]
    summary = {}
    for k in keys:
        xs = [r[k] for r in per_seed]
        summary[k] = {"mean": sum(xs) / len(xs), "ci95": interval(xs), "per_seed": xs}
    enc = [r["encoder"] for r in per_seed]
    ada = [r["adapter"] for r in per_seed]
    payload = {
        **summary,
        "text_logit_max_abs_diff": max(r["text_logit_max_abs_diff"] for r in per_seed),
        "trainable_params": {"encoder": enc[0]["trainable_params"],
                             "adapter": ada[0]["trainable_params"]},
        "train_seconds": {"encoder": [e["train_seconds"] for e in enc],
                          "adapter": [a["train_seconds"] for a in ada]},
        "encoder_heldout_read_accuracy": [e["heldout_read_accuracy"] for e in enc],
        "adapter_loss": [[a["initial_loss"], a["final_loss"]] for a in ada],
        "gates": [a["gates"] for a in ada],
        "cross_attention_layers": per_seed[0]["cross_attention_layers"],
        "n_eval": per_seed[0]["n"], "solver": args.solver, "seeds": args.seeds,
        "quick": args.quick, "threads": args.threads, "settings": settings,
        "examples": per_seed[0]["examples"][:3],
        "note": "timings measured on a shared, heavily loaded 2-core machine",
    }
    rows = [(k, f"{summary[k]['mean']:.3f}",
             f"[{summary[k]['ci95'][0]:.3f}, {summary[k]['ci95'][1]:.3f}]") for k in keys]
    rows.append(("text_logit_max_abs_diff", f"{payload['text_logit_max_abs_diff']:.3g}", ""))
    rows.append(("trainable params encoder / adapter",
                 f"{payload['trainable_params']['encoder']} / {payload['trainable_params']['adapter']}", ""))
    print_table(rows, ("measure", "mean", "95% interval over seeds"))
    print(write_result("multimodal", payload))


if __name__ == "__main__":
    main()
