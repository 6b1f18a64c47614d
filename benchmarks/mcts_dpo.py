"""Benchmark: MCTS-DPO (arXiv:2405.00451) on a partly-right six-skill herd solver, against the SFT
model, instance-level DPO and RS-SFT + step DPO at the same number of generated tokens, and the
cost of one search with and without prefix-cache reuse and batched self-evaluation.

Per seed (seeds run in parallel processes, one torch thread each):

* MCTS-DPO: ``rounds`` × (search over ``prompts`` held-in 2- and 3-skill training prompts with the
  current policy → step pairs with ε from visit counts → DPO, reference = the SFT model);
* instance-level DPO: ``k`` samples per prompt from the SFT model on the same prompts, ``k`` chosen
  so the sampled tokens match the search's generated tokens; pairs of a whole correct against a
  whole incorrect sample (the answer checker), DPO from the SFT model;
* RS-SFT + step DPO (the post-training package's best recipe): half the budget sampled from the
  SFT model → SFT on the kept correct samples → the other half sampled from that model → pairs cut
  at the first differing step → DPO (NLL 1.0, lr 3e-5, as ``configs/posttrain_quick.yaml``);

then greedy accuracy of every model on the same held-out 2- and 3-skill test problems.
``search_speedup``: the same searches run with ``batched`` on and off, time per expansion.

    python benchmarks/mcts_dpo.py --quick [--seeds 0 1 2] [--jobs 3] [--model herd-m]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

EVAL_SETS = ("test_k2", "test_k3")  # held-out sets pooled by default
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_interval(xs: list[float]) -> list[float]:
    m = statistics.mean(xs)
    if len(xs) < 2:
        return [m, m]
    half = T975.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / len(xs) ** 0.5
    return [m - half, m + half]


def settings(quick: bool, sets: list[str] | tuple = ()) -> dict:
    st = _settings(quick)
    for kv in sets:
        k, _, v = kv.partition("=")
        if k not in st:
            raise SystemExit(f"unknown setting {k!r}; one of {sorted(st)}")
        st[k] = int(v)
    return st


def _settings(quick: bool) -> dict:
    if quick:
        return {"rounds": 2, "prompts": 6, "eval_limit": 50, "n_actions": 3, "root_actions": 4,
                "n_iters": 3, "root_iters_mult": 2, "rs_sft_steps": 8}
    return {"rounds": 3, "prompts": 24, "eval_limit": 0, "n_actions": 4, "root_actions": 6,
            "n_iters": 8, "root_iters_mult": 2, "rs_sft_steps": 30}


def prepare_data(model: str, out: Path, prompt_skills: tuple[int, ...] = (2, 3),
                 extra_test: int = 0) -> Path:
    """The solver recipe's SkillMath splits (same generator config, so the same problems); the
    training prompts are its training problems with ``prompt_skills`` skills. ``extra_test`` adds
    that many fresh 2- and 3-skill problems (half each in expectation) to the held-out test set,
    drawn from the same generator with their own seed and excluding every question of the
    recipe's splits, for a tighter accuracy estimate."""
    from reasonlab.data.skillmath import generate, sample_problems, write_splits
    from reasonlab.models.recipes import get_recipe
    from reasonlab.runs import atomic_write_json, read_json

    d = out / "data"
    spec = {"model": model, "prompt_skills": sorted(prompt_skills), "extra_test": extra_test}
    if (d / "prompts.jsonl").exists() and (d / "spec.json").exists() and read_json(d / "spec.json") == spec:
        return d
    cfg = get_recipe(model).config.data  # the recipe's own SkillMath generator config
    splits = generate(cfg)
    extra = []
    if extra_test:
        seen = {p.question for s in splits.values() for p in s}
        extra = sample_problems(cfg, extra_test, seed=f"{cfg.seed}:test-extra", prefix="sm-testx",
                                k=[0, 0.5, 0.5], exclude_questions=seen)
    write_splits({"test": splits["test"] + extra}, d)
    write_splits({"prompts": [p for p in splits["train"] if len(p.skills) in prompt_skills]}, d)
    atomic_write_json(d / "spec.json", spec)
    return d


def evaluate(model_dir, data: Path, out: Path, limit: int, seed: int,
             sets: list[str] | tuple = EVAL_SETS) -> dict:
    from reasonlab.evals.skillmath_eval import evaluate_sets, pooled_accuracy, read_eval_sets

    ev = evaluate_sets(model_dir, read_eval_sets(data), out, names=list(sets),
                       limit=limit, max_new_tokens=160, batch_size=64, seed=seed, progress=False)
    return {"pooled": pooled_accuracy(ev)["accuracy"], "n": pooled_accuracy(ev)["n"],
            **{s: r["overall"]["accuracy"] for s, r in ev.items()}}


def sample_tokens(records) -> int:
    return sum(s["n_tokens"] for r in records for s in r["samples"])


def one_seed(seed: int, model: str, out: str, quick: bool, threads: int, sets: list[str],
             lr: float = 5e-5, epochs: int = 3,
             eval_sets: list[str] | tuple = EVAL_SETS, nll_weight: float = 0.0) -> dict:
    import logging

    import torch

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(threads)
    from reasonlab.data.skillmath import read_problems
    from reasonlab.lm.local import LocalLM
    from reasonlab.models.cache import resolve_model
    from reasonlab.posttrain import (SamplingConfig, build_pairs, best_samples, dpo_inputs,
                                     rejection_sample, rs_sft_config, run_dpo, run_rs_sft)
    from reasonlab.reasoning.mcts import MCTSConfig
    from reasonlab.reasoning.mcts_dpo import MCTSDPOConfig, mcts_dpo_dpo_config, round_prompts, run_mcts_dpo
    from reasonlab.runs import atomic_write_json, read_json

    st = settings(quick, sets)
    base = Path(out) / f"seed{seed}"
    data = Path(out) / "data"
    sft = resolve_model(model)
    times = {}
    t0 = time.time()
    search = MCTSConfig(n_actions=st["n_actions"], root_actions=st["root_actions"],
                        n_iters=st["n_iters"], root_iters_mult=st["root_iters_mult"], max_depth=5,
                        max_step_tokens=80, temperature=0.8)
    dpo = mcts_dpo_dpo_config(lr=lr, epochs=epochs, nll_weight=nll_weight)
    cfg = MCTSDPOConfig(seed=seed, threads=threads, model=str(sft), problems=str(data / "prompts.jsonl"),
                        rounds=st["rounds"], prompts_per_round=st["prompts"], search=search, dpo=dpo)
    mres = run_mcts_dpo(cfg, base / "mcts_dpo", progress=False)
    times["mcts_dpo_min"] = (time.time() - t0) / 60
    tokens = mres["generated_tokens"]
    prompts = [p for batch in round_prompts(read_problems(data / "prompts.jsonl"), cfg.rounds,
                                            cfg.prompts_per_round, seed) for p in batch]
    # one complete sample ≈ the tokens of a committed search path
    path_tokens = []
    for r in range(cfg.rounds):
        for f in sorted((base / "mcts_dpo" / f"round_{r}" / "trees").glob("*.json")):
            rec = read_json(f)
            nodes = {}
            stack = [rec["tree"]]
            while stack:
                n = stack.pop()
                nodes[n["id"]] = n
                stack.extend(n["children"])
            path_tokens.append(sum(nodes[i]["n_tokens"] for i in rec["path"]))
    per_sample = max(1.0, statistics.mean(path_tokens))
    k = max(2, round(tokens / (len(prompts) * per_sample)))

    def sample(model_dir, k_, seed_, tag):
        path = base / f"samples_{tag}.json"
        if path.exists():
            return read_json(path)
        lm = LocalLM.from_pretrained(model_dir, device="cpu", batch_size=64)
        scfg = SamplingConfig(k=k_, temperature=search.temperature, max_new_tokens=160,
                              batch_size=max(1, 64 // k_), n_prompts=0, seed=seed_)
        recs = rejection_sample(lm, prompts, scfg, progress=False)
        atomic_write_json(path, recs)
        return recs

    # instance-level DPO: whole right vs whole wrong samples from the SFT model
    t0 = time.time()
    recs = sample(sft, k, 1000 * seed + 1, "instance")
    inst_tokens = sample_tokens(recs)
    inst_pairs = build_pairs(recs, max_pairs_per_prompt=cfg.max_pairs_per_prompt)
    inst_cfg = dataclasses.replace(dpo, append_eos=True, seed=seed)
    inst = run_dpo(sft, inst_pairs, inst_cfg, base / "instance_dpo") if inst_pairs else None
    times["instance_dpo_min"] = (time.time() - t0) / 60

    # RS-SFT + step DPO: half the budget before RS-SFT, half after
    t0 = time.time()
    half = max(2, k // 2)
    recs1 = sample(sft, half, 1000 * seed + 2, "rs1")
    kept = [b for b in best_samples(recs1) if b["reward"] > 0.5]
    rs_model = sft  # no kept sample: nothing to fine-tune on, the SFT model goes on
    rs = {"examples": 0}
    if kept:
        rs = run_rs_sft(sft, kept, rs_sft_config(
            max_steps=st["rs_sft_steps"], batch_size=8, seq_len=384, seed=seed, warmup_steps=2,
            lr=3e-4), base / "rs_sft")
        rs_model = base / "rs_sft" / "model"
    recs2 = sample(rs_model, half, 1000 * seed + 3, "rs2")
    rs_tokens = sample_tokens(recs1) + sample_tokens(recs2)
    step_pairs, step_cfg = dpo_inputs(build_pairs(recs2, max_pairs_per_prompt=cfg.max_pairs_per_prompt),
                                      "step", mcts_dpo_dpo_config(lr=3e-5, nll_weight=1.0, epochs=2,
                                                                  seed=seed))
    if step_pairs:
        run_dpo(rs_model, step_pairs, step_cfg, base / "rs_step_dpo")
        rs_model = base / "rs_step_dpo" / "model"
    times["rs_step_dpo_min"] = (time.time() - t0) / 60

    t0 = time.time()
    ev = {"mcts_dpo": evaluate(mres["final_model"], data, base / "eval" / "mcts_dpo", st["eval_limit"], seed, eval_sets),
          "instance_dpo": evaluate(base / "instance_dpo" / "model" if inst else sft, data,
                                   base / "eval" / "instance_dpo", st["eval_limit"], seed, eval_sets),
          "rs_step_dpo": evaluate(rs_model, data, base / "eval" / "rs_step_dpo", st["eval_limit"], seed, eval_sets)}
    times["eval_min"] = (time.time() - t0) / 60
    return {"seed": seed, "accuracy": ev, "k": k, "tokens_per_sample": per_sample,
            "generated_tokens": {"mcts_dpo": tokens, "instance_dpo": inst_tokens, "rs_step_dpo": rs_tokens},
            "pairs": {"mcts_dpo": [r["pairs"] for r in mres["rounds"]], "instance_dpo": len(inst_pairs),
                      "rs_step_dpo": len(step_pairs), "rs_sft_examples": rs.get("examples")},
            "rounds": mres["rounds"], "minutes": times}


def measure_search_cost(model: str, data: Path, n_prompts: int, threads: int) -> dict:
    """The same searches with ``batched`` on (shared-prefix sampling, shared-prefix batched
    self-evaluation) and off (one generate / one score call per candidate, prefix re-encoded),
    alternated prompt by prompt; wall time, forward tokens and generated tokens per expansion."""
    import torch

    torch.set_num_threads(threads)
    from reasonlab.data.skillmath import format_prompt, read_problems
    from reasonlab.evals.accuracy import is_correct
    from reasonlab.lm.local import LocalLM
    from reasonlab.models.cache import resolve_model
    from reasonlab.reasoning.mcts import MCTSConfig, search

    lm = LocalLM.from_pretrained(resolve_model(model), device="cpu")
    probs = read_problems(data / "prompts.jsonl")[:n_prompts]
    tot = {m: {"wall_s": 0.0, "expansions": 0, "forward_tokens": 0, "generated_tokens": 0,
               "expand_s": 0.0, "self_eval_s": 0.0} for m in ("batched", "unbatched")}
    for i, p in enumerate(probs):
        for mode in ("batched", "unbatched"):
            cfg = MCTSConfig(n_actions=4, root_actions=4, n_iters=3, root_iters_mult=2,
                             max_depth=5, max_step_tokens=80, temperature=0.8,
                             batched=mode == "batched")
            lm.reset_counters()
            res = search(lm, format_prompt(p.question),
                         lambda s, a=p.answer: is_correct(s, a, "answer_is"), cfg, seed=i)
            c = lm.reset_counters()
            t = tot[mode]
            t["wall_s"] += res.stats["wall_s"]
            t["expansions"] += res.stats["expansions"]
            t["forward_tokens"] += c["forward_tokens"]
            t["generated_tokens"] += res.stats["generated_tokens"]
            t["expand_s"] += res.stats["expand_s"]
            t["self_eval_s"] += res.stats["self_eval_s"]
    for t in tot.values():
        e = max(1, t["expansions"])
        t["s_per_expansion"] = t["wall_s"] / e
        t["forward_tokens_per_expansion"] = t["forward_tokens"] / e
        t["generated_tokens_per_s"] = t["generated_tokens"] / max(1e-9, t["expand_s"])
        t["self_eval_s_per_expansion"] = t["self_eval_s"] / e
        t["sampling_s_per_expansion"] = t["expand_s"] / e
    b, u = tot["batched"], tot["unbatched"]
    return {"search_speedup": u["s_per_expansion"] / b["s_per_expansion"],
            "sampling_speedup": u["sampling_s_per_expansion"] / b["sampling_s_per_expansion"],
            "self_eval_speedup": u["self_eval_s_per_expansion"] / b["self_eval_s_per_expansion"],
            "forward_tokens_ratio": u["forward_tokens_per_expansion"] / b["forward_tokens_per_expansion"],
            "prompts": n_prompts, **tot}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="herd-m", help="the SFT policy (a six-skill solver recipe: herd-*, herd-ml)")
    ap.add_argument("--cost-prompts", type=int, default=3)
    ap.add_argument("--out", default="runs/bench_mcts_dpo")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="override a setting, e.g. --set prompts=4 (rounds, prompts, eval_limit, ...)")
    ap.add_argument("--lr", type=float, default=5e-5, help="DPO learning rate (MCTS-DPO, instance DPO)")
    ap.add_argument("--epochs", type=int, default=3, help="DPO epochs per round")
    ap.add_argument("--nll-weight", type=float, default=0.0,
                    help="weight of the chosen-answer NLL term in the DPO loss (MCTS-DPO, instance DPO)")
    ap.add_argument("--json-name", default="mcts_dpo", help="result file name (benchmarks/results/NAME.json)")
    ap.add_argument("--prompt-skills", type=int, nargs="+", default=[2, 3],
                    help="training prompts: training problems with this many skills")
    ap.add_argument("--eval-sets", nargs="+", default=list(EVAL_SETS),
                    help="held-out sets the accuracy is pooled over")
    ap.add_argument("--extra-test", type=int, default=0,
                    help="fresh held-out 2- and 3-skill problems added to the test set")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    from _common import print_table, write_result

    torch.set_num_threads(args.threads)
    t_start = time.time()
    load0 = os.getloadavg()
    out = Path(args.out)
    from reasonlab.models.cache import resolve_model

    sft = resolve_model(args.model)
    data = prepare_data(args.model, out, tuple(args.prompt_skills), args.extra_test)
    st = settings(args.quick, args.sets)
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as ex:
        futs = [ex.submit(one_seed, s, args.model, str(out), args.quick, args.threads, args.sets,
                           args.lr, args.epochs, args.eval_sets, args.nll_weight) for s in args.seeds]
        sft_acc = evaluate(sft, data, out / "eval_sft", st["eval_limit"], 0, args.eval_sets)
        cost = measure_search_cost(args.model, data, args.cost_prompts, args.threads)
        per_seed = [f.result() for f in futs]

    methods = ["mcts_dpo", "instance_dpo", "rs_step_dpo"]
    acc = {m: [r["accuracy"][m]["pooled"] for r in per_seed] for m in methods}
    diff = [a - sft_acc["pooled"] for a in acc["mcts_dpo"]]
    by_set = {m: {e: statistics.mean(r["accuracy"][m][e] for r in per_seed) for e in args.eval_sets}
              for m in methods}
    diff_by_set = {e: t_interval([r["accuracy"]["mcts_dpo"][e] - sft_acc[e] for r in per_seed])
                   for e in args.eval_sets}
    result = {
        "policy": args.model,
        "policy_path_hash": sft.parent.name,
        "sft_accuracy_multiskill": sft_acc["pooled"],
        "sft_by_set": sft_acc,
        "mcts_dpo_accuracy_multiskill": statistics.mean(acc["mcts_dpo"]),
        "instance_dpo_accuracy_multiskill": statistics.mean(acc["instance_dpo"]),
        "rs_step_dpo_accuracy_multiskill": statistics.mean(acc["rs_step_dpo"]),
        "paired_diff_ci95": t_interval(diff),
        "paired_diff_mean": statistics.mean(diff),
        "accuracy_by_set": {"sft": {e: sft_acc[e] for e in args.eval_sets}, **by_set},
        "paired_diff_ci95_by_set": diff_by_set,
        "vs_baselines_diff": {m: statistics.mean(a - b for a, b in zip(acc["mcts_dpo"], acc[m]))
                              for m in methods[1:]},
        "seeds": args.seeds,
        "generated_tokens_per_method": {m: statistics.mean(r["generated_tokens"][m] for r in per_seed)
                                        for m in methods},
        "search_speedup": cost["search_speedup"],
        "search_cost": cost,
        "per_seed": per_seed,
        "settings": {**st, "quick": args.quick, "threads": args.threads, "jobs": args.jobs,
                     "eval_sets": args.eval_sets, "prompt_skills": args.prompt_skills,
                     "extra_test": args.extra_test, "temperature": 0.8,
                     "dpo_lr": args.lr, "dpo_epochs": args.epochs, "dpo_nll_weight": args.nll_weight},
        "metric": f"greedy accuracy on held-out SkillMath problems, {'+'.join(args.eval_sets)} pooled; "
                  "paired_diff_ci95: Student-t over seeds of (MCTS-DPO - SFT) on the same problems",
        "wall_minutes": (time.time() - t_start) / 60,
        "load_avg_at_start": list(load0), "load_avg_at_end": list(os.getloadavg()),
        "note": "timings on a shared, heavily loaded 2-core machine",
    }
    path = write_result(args.json_name, result)
    rows = [("SFT", f"{sft_acc['pooled']:.3f}", "-", "-")]
    for m in methods:
        rows.append((m, f"{statistics.mean(acc[m]):.3f}",
                     " ".join(f"{a:.3f}" for a in acc[m]),
                     f"{result['generated_tokens_per_method'][m]:.0f}"))
    print_table(rows, ("model", "accuracy (mean)", "per seed", "generated tokens"))
    print_table([(m, *(f"{result['accuracy_by_set'][m][e]:.3f}" for e in args.eval_sets))
                 for m in ["sft", *methods]], ("model", *args.eval_sets))
    ci = result["paired_diff_ci95"]
    print(f"MCTS-DPO - SFT: {result['paired_diff_mean']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]")
    for e, (lo, hi) in diff_by_set.items():
        print(f"  {e}: [{lo:+.3f}, {hi:+.3f}]")
    print(f"search speedup (time per expansion, unbatched / batched): {cost['search_speedup']:.2f}x; "
          f"sampling {cost['sampling_speedup']:.2f}x, self-evaluation {cost['self_eval_speedup']:.2f}x, "
          f"forward tokens {cost['forward_tokens_ratio']:.2f}x fewer")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
