"""IsoFLOP scaling law of the tiny herd: N*(C) = A·C^alpha from a sweep of budgets × sizes.

Trains every size at every compute budget (C = 6·N·D, N = non-embedding parameters) with the
project's pretraining loop on SkillMath text, fits a parabola of validation loss against log N per
budget and a power law through the minima, and writes ``benchmarks/results/scaling.json`` (alpha,
r2, budgets, sizes, the optimal N per budget, the prediction, the machine and the date). The run
directory (with ``isoflops.png``) is resumed if it exists.

    python benchmarks/scaling.py --quick        # configs/scaling_quick.yaml (30 min on a busy 2-core CPU)
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
    args = ap.parse_args()

    import logging

    from reasonlab.config import load_config, to_dict
    from reasonlab.llama.scaling import ScalingConfig, run_scaling

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg_path = ROOT / "configs" / "scaling_quick.yaml" if args.quick else None
    cfg = load_config(ScalingConfig, cfg_path, args.set)
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
    print(f"\nalpha = {res['alpha']:.3f}  (tokens: {res['alpha_tokens']:.3f})  R2 = {res['r2']:.3f}  "
          f"A = {res['A']:.4g}; at C = {pred['budget']:.2g}: N* = {pred['n_opt']:.4g}, "
          f"D* = {pred['tokens_opt']:.4g}; wall {res['wall_s']:.0f} s")

    payload = {
        "preset": "quick" if args.quick else "default",
        "alpha": res["alpha"], "r2": res["r2"], "A": res["A"], "alpha_tokens": res["alpha_tokens"],
        "param_count": res["param_count"], "budgets": res["budgets"], "sizes": res["sizes"],
        "optimal": res["optimal"], "excluded_budgets": res["excluded_budgets"],
        "prediction": pred, "points": res["points"], "seed": res["seed"],
        "wall_s": res["wall_s"], "config": to_dict(cfg),
        "command": "python benchmarks/scaling.py" + (" --quick" if args.quick else ""),
    }
    path = write_result("scaling", payload)
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
