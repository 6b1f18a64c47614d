"""PTST on the tiny aligned chat model: the train × test template matrix of helpfulness and ASR.

Measures (issue 20): the aligned chat model (``aligned-chat``) fine-tuned on SkillMath addition with
each training template and tested with each test template, over seeds, with 95% t-intervals:
helpfulness (held-out task accuracy), the share of task questions refused, ASR on held-out
AdvBench behaviours by refusal prefixes and by the tiny guard model in the Llama Guard 3 format,
and their agreement; the model before fine-tuning (``base_asr``); whether PTST (train
``chat:vanilla``, test ``chat:llama``) has the lowest ASR among cells at least as helpful; and the
guard model's accuracy on held-out harmful and benign requests.

    python benchmarks/ptst.py --quick     # 3 x 3 templates, 3 seeds: writes results/ptst.json
    python benchmarks/ptst.py --quick --all-templates   # 7 x 7 at the quick settings (~30 min)
    python benchmarks/ptst.py             # 7 x 7, full settings (hours on a loaded 2-core CPU)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

QUICK_TEMPLATES = ["chat:vanilla", "chat:alpaca", "chat:llama"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 x 3 templates, small evaluation sets")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--all-templates", action="store_true",
                    help="with --quick: all 7 x 7 templates at the quick settings")
    ap.add_argument("--out", type=Path, default=None, help="run directory (resumed)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    from _common import print_table, write_result
    from reasonlab.evals.ptst import PTSTConfig, format_matrix, run_ptst
    from reasonlab.models.cache import model_path
    from reasonlab.runs import read_json
    from reasonlab.templates import PTST_TEMPLATES

    torch.set_num_threads(args.threads)
    t0 = time.time()
    guard_dir = model_path("guard")
    guard_info = read_json(guard_dir / "guard_model.json")
    t_guard = time.time() - t0
    templates = QUICK_TEMPLATES if args.quick and not args.all_templates else list(PTST_TEMPLATES)
    name = "ptst_full" if not args.quick else "ptst_all_templates" if args.all_templates else "ptst"
    settings = dict(n_train=400, max_steps=40, batch_size=8, lr=1e-3, seq_len=160,
                    n_harmful=50, n_helpful=50, max_new_tokens=12) if args.quick else {}
    cfg = PTSTConfig(train_templates=templates, test_templates=templates, seeds=args.seeds, **settings)
    out = args.out or ROOT / "runs" / f"bench_{name}"
    t1 = time.time()
    res = run_ptst(cfg, out)
    t_matrix = time.time() - t1

    print(format_matrix(res))
    rows = []
    for tr in templates:
        for te in templates:
            c = res["matrix"][tr][te]
            rows.append((tr, te, f"{c['helpfulness']:.3f}±{c['ci95']['helpfulness']:.3f}",
                         f"{c['task_refusal']:.3f}", f"{c['asr']:.3f}±{c['ci95']['asr']:.3f}",
                         f"{c.get('asr_guard', float('nan')):.3f}"))
    print_table(rows, ("train", "test", "helpfulness", "task refusal", "ASR prefix", "ASR guard"))
    g = guard_info.get("heldout", {})
    print(f"guard model held-out accuracy {g.get('accuracy')} (prompt {g.get('accuracy_prompt')}, "
          f"response {g.get('accuracy_response')}, category {g.get('category_accuracy')}); "
          f"guard/prefix agreement on replies {res['guard_prefix_agreement']}")
    print("verdict:", res["verdict"])

    matrix = {tr: {te: {k: c.get(k) for k in ("helpfulness", "asr", "asr_guard", "task_refusal",
                                               "ci95", "helpfulness_per_seed", "asr_per_seed",
                                               "asr_guard_per_seed", "task_refusal_per_seed")}
                   for te, c in row.items()} for tr, row in res["matrix"].items()}
    payload = {
        "quick": args.quick, "threads": args.threads, "seeds": args.seeds, "templates": templates,
        "matrix": matrix, "base": res["base"],
        "ptst_asr": res["ptst_asr"], "same_template_safety_asr": res["same_template_safety_asr"],
        "base_asr": res["base_asr"], "verdict": res["verdict"],
        "guard_accuracy": g.get("accuracy"), "guard_heldout": g,
        "guard_prefix_agreement": res["guard_prefix_agreement"],
        "guard_train_loss": guard_info.get("train_loss"), "guard_params": guard_info.get("n_params"),
        "settings": {k: v for k, v in cfg.__dict__.items()},
        "wall_s": {"guard_build_or_load": round(t_guard, 1), "matrix": round(t_matrix, 1)},
        "note": "timings on a shared, loaded 2-core machine",
    }
    print("wrote", write_result(name, payload))


if __name__ == "__main__":
    main()
