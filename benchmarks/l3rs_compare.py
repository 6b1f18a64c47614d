"""L3RS (learned layer-wise mix of base optimizers) against tuned baselines on digits fine-tuning.

Meta-trains L3RS and three ablations (step size only, mix only, a single base direction) with the
same ES budget, tunes Adam, Adam+cosine, SGD+momentum, normalized SGD with decay and LAMB with
that many inner runs each, runs everything on 16 held-out seeds in the meta-training environment
and the generalization settings (unseen pretrained checkpoints, shifted / noisy / odd-digit data,
3x the horizon), measures per-step wall time against Adam, prints a table and writes
``benchmarks/results/l3rs_compare.json`` (``--quick``: ``l3rs_compare_quick.json``).

    python benchmarks/l3rs_compare.py --quick      # a few minutes
    python benchmarks/l3rs_compare.py              # the full benchmark

Further stages add keys to the same result file (each keeps the others' keys):

    python benchmarks/l3rs_compare.py --stage step_time      # step time vs Adam (digits, LM)
    python benchmarks/l3rs_compare.py --stage val_objective [--objective val_mean]  # held-out
                                                             # meta-objective, 5 settings
    python benchmarks/l3rs_compare.py --stage val_objective --es-horizons 50 100 200 \
        --meta-set env.options.val_split=per_seed --headline  # the variant that is reported
    python benchmarks/l3rs_compare.py --stage lm             # herd-xs fine-tuned on a new skill
    python benchmarks/l3rs_compare.py --stage general_lopt   # vs the per-parameter MLP optimizer

``--seeds N`` sets the paired test seeds of the new stages (the result records ``n_seeds``).

Run directories go under ``runs/bench_l3rs[_quick]``; a killed benchmark resumes where it stopped
(the reported wall and CPU times add up all invocations on the directory).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

import numpy as np

from reasonlab.config import load_config
from reasonlab.optim import l3rs_kernels as kernels
from reasonlab.optim.compare import SETTINGS, CompareConfig, paired_stats, run_compare
from reasonlab.optim.envs import EnvSpec
from reasonlab.optim.es import MetaTrainConfig, count_layers, load_meta_run, meta_train
from reasonlab.optim.inner import Evaluator, OptSpec, step_times
from reasonlab.optim.l3rs import MetaModel
from reasonlab.runs import atomic_write_json, read_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table  # noqa: E402
ABLATIONS = {  # label -> l3rs config overrides
    "ablate_step_only": ["l3rs.mix_mode=uniform"],  # λ learned, mix fixed uniform
    "ablate_mix_only": ["l3rs.step_mode=constant"],  # μ learned, one constant step
    "ablate_single_adam": ["l3rs.directions=[adam]"],  # λ learned on the Adam direction only
}
TEST_SEEDS = list(range(1000, 1016))


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _pick(stats: dict) -> dict:
    v = stats["vs_best"]
    return {"train_loss_reduction_vs_best_baseline": round(v["train_loss_reduction"], 4),
            "test_acc_delta_vs_best_baseline": round(v["test_acc_delta"], 3),
            "wilcoxon_p": float(f"{v['wilcoxon_p']:.3g}"),
            "acc_wilcoxon_p": float(f"{v['acc_wilcoxon_p']:.3g}"), "wins": f"{v['wins']}/{v['n']}"}


def _ms(key: str) -> str:
    """``step_s`` -> ``step_ms``, ``step_s_median`` -> ``step_ms_median``, ``step_cpu_s`` ->
    ``step_cpu_ms``."""
    return key[:-2] + "_ms" if key.endswith("_s") else key.replace("_s_", "_ms_")


def _meta_cfg(config_file: Path, sets: list[str]) -> MetaTrainConfig:
    return load_config(MetaTrainConfig, config_file, sets)


LM_MODEL = "herd-xs"  # the LM setting's pretrained model (the first herd's herd1-xs before)


def _lm_env(skill: str = "avg", model: str = LM_MODEL) -> EnvSpec:
    return EnvSpec("lm", {"model": model, "skill": skill, "n_train": 256, "n_val": 64,
                          "n_test": 64, "batch_size": 8})


def _update(results_path: Path, **keys) -> dict:
    """Add ``keys`` to the result file, keeping every other key."""
    old = read_json(results_path) if results_path.exists() else {"benchmark": "l3rs_compare"}
    old.update(keys)
    atomic_write_json(results_path, old)
    return old


def stage_step_time(args, out: Path, results_path: Path) -> None:
    """Fastest of interleaved runs, one thread, L3RS (meta-parameters of the main run when it
    exists, else a fixed draw) vs Adam on the digits MLP and on the language model."""
    rows, keys = [], {}
    for label, env, steps, repeats in (("digits", EnvSpec("digits", {"batch_size": 64,
                                                                     "hidden": [64, 64]}), 100, 15),
                                       ("lm", _lm_env(), 20, 5)):
        if label == "lm" and args.no_lm:
            continue
        meta_dir = out / ("meta_l3rs" if label == "digits" else "meta_l3rs_lm")
        if (meta_dir / "meta.safetensors").exists():
            meta = load_meta_run(meta_dir)
        else:  # a random draw in the stage's own configuration
            cfg = (_meta_cfg(ROOT / "configs" / "optimizer_full.yaml", []) if label == "digits"
                   else _lm_meta_cfg(args))
            meta = MetaModel(cfg.l3rs, count_layers(env, 0, cfg.l3rs))
            meta.theta.copy_(torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, meta.size)))
        times = step_times(env, {"adam": OptSpec("adam", {"lr": 1e-3}),
                                 "l3rs": OptSpec.from_meta(meta)}, steps=steps, repeats=repeats)
        ratio = times["l3rs"]["step_cpu_s"] / times["adam"]["step_cpu_s"]
        opt_ratio = times["l3rs"]["optimizer_step_cpu_s"] / times["adam"]["optimizer_step_cpu_s"]
        wall = times["l3rs"]["step_s"] / times["adam"]["step_s"]
        suffix = "" if label == "digits" else "_lm"
        keys[f"step_time_vs_adam{suffix}"] = round(ratio, 3)
        keys[f"optimizer_step_time_vs_adam{suffix}"] = round(opt_ratio, 3)
        keys[f"step_time_vs_adam_wall{suffix}"] = round(wall, 3)
        keys[f"step_times_ms{suffix}"] = {k: {_ms(kk): round(1e3 * vv, 4) for kk, vv in v.items()}
                                          for k, v in times.items()}
        rows.append((label, f"{1e3 * times['adam']['step_cpu_s']:.3f}",
                     f"{1e3 * times['l3rs']['step_cpu_s']:.3f}", f"{ratio:.2f}x", f"{opt_ratio:.2f}x",
                     f"{wall:.2f}x"))
    keys["load_avg_1m"] = round(os.getloadavg()[0], 1)
    keys["step_time_note"] = (f"fastest of interleaved runs per optimizer ({args.threads} thread), "
                              "in the thread's CPU time (the *_wall keys: wall time, which on a "
                              "machine loaded with other jobs mostly measures waiting for a core), "
                              "Adam vs L3RS (4 normalized directions, state features) on the "
                              "digits MLP (100-step runs, 15 repeats; L3RS's fused kernels) and "
                              f"on {LM_MODEL} fine-tuning (20-step runs, 5 repeats; the LM "
                              "setting's L3RS configuration); the machine is shared with other "
                              "jobs, so the ratio varies from one measurement to the next")
    keys["threads"] = args.threads
    keys["fused_kernels"] = kernels.AVAILABLE
    _update(results_path, **keys)
    print_table(rows, ("environment", "adam CPU ms/step", "l3rs CPU ms/step", "step ratio",
                       "optimizer.step ratio", "wall ratio"))


def _compare_block(cmp: dict, label: str, settings: list[str]) -> dict:
    s = cmp["settings"]
    return {st: {**_pick(s[st]["learned"][label]), "best_baseline": s[st]["best_baseline"],
                 **({"test_loss_reduction_vs_best_baseline": round(
                     s[st]["learned"][label]["vs_best"]["test_loss_reduction"], 4)}
                    if "test_loss_reduction" in s[st]["learned"][label]["vs_best"] else {})}
            for st in settings}


def stage_val_objective(args, out: Path, results_path: Path) -> None:
    """L3RS meta-trained on the held-out loss at the end of the unroll (``--objective
    val_final``, digits with a 20% validation split of the training data) or along it
    (``val_mean``), baselines tuned on the same objective, the five generalization settings
    re-run."""
    name = "quick" if args.quick else "full"
    objective = args.objective
    sets = [f"es.workers={args.workers}", f"es.objective={objective}",
            "env.options.val_fraction=0.2"]
    variant, tag = objective, ("val" if objective == "val_final" else "valmean")
    if args.es_horizons:  # meta-train over a distribution of unroll lengths
        sets.append("es.horizons=[" + ",".join(map(str, args.es_horizons)) + "]")
        variant += "+horizons=" + ",".join(map(str, args.es_horizons))
        tag += "_h" + "_".join(map(str, args.es_horizons))
    for kv in args.meta_set:  # other meta-training settings (e.g. l3rs.state_features=false)
        sets.append(kv)
        variant += "+" + kv.split(".")[-1]
        tag += "_" + "".join(ch if ch.isalnum() else "_" for ch in kv.split(".")[-1])
    cfg = _meta_cfg(ROOT / "configs" / f"optimizer_{name}.yaml", sets)
    meta_train(cfg, out / f"meta_l3rs_{tag}", progress=not args.no_progress)
    seeds = TEST_SEEDS[:args.seeds]
    cc = CompareConfig(seed=cfg.seed, env=cfg.env, horizon=cfg.es.horizon,
                       tune_seeds=list(cfg.es.train_seeds), test_seeds=seeds,
                       learned={"l3rs_val": str(out / f"meta_l3rs_{tag}")},
                       settings=list(SETTINGS), workers=args.workers, objective=objective)
    cmp = run_compare(cc, out / f"compare_{tag}", progress=not args.no_progress)
    block = _compare_block(cmp, "l3rs_val", list(SETTINGS))
    old = read_json(results_path) if results_path.exists() else {}
    variants = {**old.get("val_objective_variants", {}), variant: block}
    keys = {"val_objective_variants": variants}
    if args.headline:
        keys.update(val_objective_generalization=block,
                    val_objective={"variant": variant, "objective": objective, "val_fraction": 0.2,
                                   "val_split": cfg.env.options.get("val_split", "fixed"),
                                   "horizons": list(cfg.es.horizons), "seed": cfg.seed,
                                   "n_seeds": len(seeds), "es_steps": cfg.es.steps,
                                   "es_pairs": cfg.es.pairs})
    _update(results_path, **keys)
    print_table([(st, f"{100 * v['train_loss_reduction_vs_best_baseline']:+.1f}%",
                  f"{v['test_acc_delta_vs_best_baseline']:+.2f}", v["acc_wilcoxon_p"],
                  v["best_baseline"]) for st, v in block.items()],
                ("setting", "train loss vs best", "acc delta (pts)", "acc p", "best baseline"))


def _lm_meta_cfg(args, learner: str = "l3rs") -> MetaTrainConfig:
    sets = [f"es.workers={args.workers}", f"es.steps={args.lm_es_steps}",
            f"es.pairs={args.lm_pairs}", f"es.horizon={args.lm_horizon}",
            "es.train_seeds=[0,1,2,3]", f"learner={learner}"]
    if learner == "l3rs":  # λ at zero meta-parameters, and the ES step, for a pretrained LM
        sets += [f"l3rs.base_lr={args.lm_base_lr}", f"es.lr={args.lm_es_lr}",
                 f"l3rs.step_scale={args.lm_step_scale}", f"l3rs.layer_rows={args.lm_layer_rows}",
                 *(["l3rs.learn_betas=true", f"l3rs.beta_scale={args.lm_beta_scale}"]
                   if args.lm_beta_scale else []),
                 *args.meta_set]  # + a variant's
    cfg = _meta_cfg(ROOT / "configs" / "optimizer_full.yaml", sets)
    cfg.env = _lm_env(model=args.lm_model)
    return cfg


def _model_build(name: str) -> dict:
    """Which build of a model-cache recipe a result used: its weights' sha256 and build time (a
    recipe retrained on another CPU is a different model: float kernels differ)."""
    from reasonlab.models.cache import manifest

    man = manifest(name) or {}
    return {"weights_sha256": man.get("files", {}).get("model.safetensors", {}).get("sha256"),
            "built_at": man.get("built_at"), "cpu": _cpu_model()}


def _learned_betas(meta_dir: Path) -> dict | None:
    """The base directions' decays a meta-training learned (``learn_betas``), else None."""
    meta = load_meta_run(meta_dir)
    c = meta.effective_config()
    if not c.learn_betas:
        return None
    return {"beta_scale": c.beta_scale, "momentum": round(c.momentum, 4),
            "adam_betas": [round(b, 4) for b in c.betas],
            "lion_betas": [round(b, 4) for b in c.lion_betas], "rms_beta": round(c.rms_beta, 4)}


def stage_lm(args, out: Path, results_path: Path) -> None:
    """L3RS on herd-xs fine-tuned on ``avg`` (a skill outside its six) vs the baselines tuned
    with the same number of inner runs; ``perim`` is the unseen skill."""
    cfg = _lm_meta_cfg(args)
    meta_train(cfg, out / "meta_l3rs_lm", progress=not args.no_progress)
    seeds = TEST_SEEDS[:args.seeds]
    settings = ["main", "unseen_skill"]
    learned = {"l3rs": str(out / "meta_l3rs_lm")}
    if (out / "meta_lopt" / "results.json").exists():
        learned["general_lopt"] = str(out / "meta_lopt")
    cc = CompareConfig(seed=cfg.seed, env=cfg.env, horizon=cfg.es.horizon,
                       tune_seeds=list(cfg.es.train_seeds), test_seeds=seeds, learned=learned,
                       reference="l3rs", settings=settings, workers=args.workers)
    cmp = run_compare(cc, out / "compare_lm", progress=not args.no_progress)
    block = _compare_block(cmp, "l3rs", settings)
    main_ = block["main"]
    _update(results_path, lm={**main_, "n_seeds": len(seeds), "unseen_skill": block["unseen_skill"],
                              "model": args.lm_model, "skill": "avg", "unseen_skill_name": "perim",
                              "inner_steps": cfg.es.horizon, "es_steps": cfg.es.steps,
                              "es_pairs": cfg.es.pairs, "tune_budget": cmp["tune_budget"],
                              "base_lr": cfg.l3rs.base_lr, "step_scale": cfg.l3rs.step_scale,
                              "layer_rows": cfg.l3rs.layer_rows, "es_lr": cfg.es.lr,
                              "learn_betas": cfg.l3rs.learn_betas,
                              "learned_betas": _learned_betas(out / "meta_l3rs_lm"),
                              "model_build": _model_build(args.lm_model),
                              "table": {st: cmp["settings"][st]["optimizers"] for st in settings}})
    print_table([(st, f"{100 * v['train_loss_reduction_vs_best_baseline']:+.1f}%",
                  v["wilcoxon_p"], f"{v['test_acc_delta_vs_best_baseline']:+.2f}",
                  v["acc_wilcoxon_p"], v["best_baseline"]) for st, v in block.items()],
                ("setting", "train loss vs best", "p", "acc delta (pts)", "acc p", "best"))


def stage_general_lopt(args, out: Path, results_path: Path) -> None:
    """The per-parameter MLP learned optimizer meta-trained on a distribution of digits tasks
    (three architectures, three data variants, horizons 50-150) with the L3RS budget or more,
    then compared with L3RS on the same seeds on digits (and the LM environment when its
    comparison ran)."""
    name = "quick" if args.quick else "full"
    base = _meta_cfg(ROOT / "configs" / f"optimizer_{name}.yaml", [])
    d = dict(base.env.options)
    sets = [f"es.workers={args.workers}", "learner=lopt", "es.horizons=[50,100,150]",
            "es.sigma=0.05"]
    cfg = _meta_cfg(ROOT / "configs" / f"optimizer_{name}.yaml", sets)
    cfg.extra_envs = [EnvSpec("digits", {**d, "hidden": [32]}),
                      EnvSpec("digits", {**d, "hidden": [64, 64, 32]}),
                      EnvSpec("digits", {**d, "variant": "noise"}),
                      EnvSpec("digits", {**d, "variant": "split"})]
    meta_train(cfg, out / "meta_lopt", progress=not args.no_progress)
    seeds = TEST_SEEDS[:args.seeds]
    cc = CompareConfig(seed=base.seed, env=base.env, horizon=base.es.horizon,
                       tune_seeds=list(base.es.train_seeds), test_seeds=seeds,
                       learned={"l3rs": str(out / "meta_l3rs"), "general_lopt": str(out / "meta_lopt")},
                       reference="l3rs", settings=["main"], workers=args.workers,
                       baselines=["adam"], tune_budget=16)
    cmp = run_compare(cc, out / "compare_lopt", progress=not args.no_progress)
    vs = {"note": "L3RS minus the general learned optimizer, paired by seed; a diverged run's "
                  "held-out accuracy counts as 0"}
    evals = {"digits": out / "compare_lopt" / "eval_main.json",
             "lm": out / "compare_lm" / "eval_main.json"}
    for env_name, path in evals.items():
        r = read_json(path) if path.exists() else {}
        if "general_lopt" not in r:
            continue
        ours, theirs = ([{**x, "test_acc": 0.0 if x["diverged"] else x["test_acc"]} for x in r[k]]
                        for k in ("l3rs", "general_lopt"))
        st = paired_stats(ours, theirs)
        vs[env_name] = {"train_loss_reduction": round(st["train_loss_reduction"], 4),
                        "test_acc_delta": round(st["test_acc_delta"], 3),
                        "wilcoxon_p": float(f"{st['wilcoxon_p']:.3g}"),
                        "acc_wilcoxon_p": float(f"{st['acc_wilcoxon_p']:.3g}"),
                        "general_lopt_diverged": int(sum(x["diverged"] for x in theirs)),
                        "n_seeds": len(ours)}
    lres = read_json(out / "meta_lopt" / "results.json")
    _update(results_path, vs_general_lopt=vs,
            general_lopt={"n_meta_params": lres["n_meta_params"], "inner_runs": lres["inner_runs"],
                          "n_envs": lres["n_envs"], "horizons": lres["horizons"]})
    print_table([(k, f"{100 * v['train_loss_reduction']:+.1f}%", f"{v['test_acc_delta']:+.2f}",
                  v["wilcoxon_p"], f"{v['general_lopt_diverged']}/{v['n_seeds']}")
                 for k, v in vs.items() if k != "note"],
                ("environment", "L3RS loss vs general", "acc delta (pts)", "p",
                 "general diverged"))
    del cmp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="30 ES steps of 4 pairs (minutes)")
    ap.add_argument("--out", type=Path, default=None, help="run directory root")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--stage", default="main",
                    choices=["main", "step_time", "val_objective", "lm", "general_lopt"])
    ap.add_argument("--seeds", type=int, default=16, help="paired test seeds of the new stages")
    ap.add_argument("--objective", default="val_final", choices=["val_final", "val_mean"],
                    help="val_objective: held-out loss at the end of the unroll, or along it")
    ap.add_argument("--meta-set", action="append", default=[], metavar="KEY=VALUE",
                    help="val_objective, lm: a meta-training config override for a variant "
                         "(repeatable; val_objective names it in the variant's key)")
    ap.add_argument("--headline", action="store_true",
                    help="val_objective: record this variant as val_objective_generalization "
                         "(every variant is kept in val_objective_variants)")
    ap.add_argument("--es-horizons", type=int, nargs="+", default=None,
                    help="val_objective: meta-train over these unroll lengths (es.horizons; "
                         "the settings and the baselines' tuning keep the 100-step horizon)")
    ap.add_argument("--lm-es-steps", type=int, default=120,
                    help="LM: ES steps (x 2 x pairs = the inner runs each baseline is tuned with; "
                         "120 x 2 pairs: 480, ~60 minutes on two workers)")
    ap.add_argument("--lm-pairs", type=int, default=2)
    ap.add_argument("--lm-horizon", type=int, default=40)
    ap.add_argument("--lm-model", default=LM_MODEL, help="the LM setting's model-cache recipe")
    ap.add_argument("--lm-base-lr", type=float, default=0.01,
                    help="L3RS step size at zero meta-parameters on the LM, relative to each "
                         "tensor's weight RMS under the default --lm-step-scale")
    ap.add_argument("--lm-step-scale", default="weight_rms", choices=["absolute", "weight_rms"],
                    help="L3RS step sizes on the LM: absolute, or relative to the weight RMS")
    ap.add_argument("--lm-es-lr", type=float, default=0.05, help="ES Adam step on the LM")
    ap.add_argument("--lm-layer-rows", default="kind", choices=["tensor", "kind"],
                    help="L3RS meta rows on the LM: one per tensor, or one per tensor kind")
    ap.add_argument("--lm-beta-scale", type=float, default=5.0,
                    help="L3RS on the LM: learn the base directions' decays (l3rs.learn_betas) "
                         "with this logit scale; 0: the decays stay fixed")
    ap.add_argument("--no-lm", action="store_true", help="step_time: digits only")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    name = "quick" if args.quick else "full"
    out = args.out or ROOT / "runs" / f"bench_l3rs{'_quick' if args.quick else ''}"
    results_path = args.results or ROOT / "benchmarks" / "results" / (
        "l3rs_compare_quick.json" if args.quick else "l3rs_compare.json")
    config_file = ROOT / "configs" / f"optimizer_{name}.yaml"
    workers = [f"es.workers={args.workers}"]
    t0, c0 = time.time(), _cpu_seconds()
    stages = {"step_time": stage_step_time, "val_objective": stage_val_objective,
              "lm": stage_lm, "general_lopt": stage_general_lopt}
    if args.stage in stages:
        stages[args.stage](args, out, results_path)
        print(f"stage {args.stage}: wall {time.time() - t0:.0f} s, "
              f"CPU {_cpu_seconds() - c0:.0f} s -> {results_path}")
        return

    variants = {"l3rs": load_config(MetaTrainConfig, config_file, workers)}
    for label, sets in ABLATIONS.items():
        variants[label] = load_config(MetaTrainConfig, config_file, workers + sets)
    base = variants["l3rs"]
    timings = {}
    with Evaluator(args.workers) as ev:
        for label, cfg in variants.items():
            ts = time.time()
            meta_train(cfg, out / f"meta_{label}", evaluator=ev)
            timings[f"meta_train_{label}_s"] = round(time.time() - ts, 1)
        cc = CompareConfig(seed=base.seed, env=base.env, horizon=base.es.horizon,
                           tune_seeds=list(base.es.train_seeds), test_seeds=TEST_SEEDS,
                           learned={k: str(out / f"meta_{k}") for k in variants},
                           reference="l3rs", settings=list(SETTINGS), workers=args.workers)
        ts = time.time()
        cmp = run_compare(cc, out / "compare", evaluator=ev)
        timings["compare_s"] = round(time.time() - ts, 1)

    # per-step wall time on the same model and batches (one thread, in this process)
    adam = OptSpec("adam", cmp["tuned"]["adam"])
    times = step_times(base.env, {"adam": adam,
                                  "l3rs": OptSpec.from_meta(load_meta_run(out / "meta_l3rs"))})
    ratio = times["l3rs"]["step_s"] / times["adam"]["step_s"]
    opt_ratio = times["l3rs"]["optimizer_step_s"] / times["adam"]["optimizer_step_s"]

    s = cmp["settings"]
    main_stats = s["main"]["learned"]["l3rs"]
    headline = _pick(main_stats)
    result = {
        "benchmark": "l3rs_compare", "mode": name,
        **headline,
        "best_baseline": s["main"]["best_baseline"],
        "target_20pct_met": headline["train_loss_reduction_vs_best_baseline"] >= 0.2
        and headline["test_acc_delta_vs_best_baseline"] >= 0.0,
        "vs_each_baseline": {b: {"train_loss_reduction": round(v["train_loss_reduction"], 4),
                                 "test_acc_delta": round(v["test_acc_delta"], 3),
                                 "wilcoxon_p": float(f"{v['wilcoxon_p']:.3g}")}
                             for b, v in main_stats["vs"].items()},
        "generalization": {st: {**_pick(s[st]["learned"]["l3rs"]),
                                "best_baseline": s[st]["best_baseline"]}
                           for st in SETTINGS if st != "main"},
        "generalization_settings": {
            "unseen_init": "held-out seeds of checkpoints from another pretraining recipe "
                           "(SGD+momentum, 3x the steps) than meta-training saw",
            "shift": "fine-tuning digits shifted by one pixel right and down",
            "noise": "fine-tuning digits with Gaussian pixel noise (std 0.15)",
            "split": "pretrained on even digits, fine-tuned on odd digits",
            "long3x": "300 steps instead of 100; baselines' schedules stretched to 300",
        },
        "time_features": "absolute: exp(-t/tau) for tau = " + ", ".join(
            f"{x:g}" for x in base.l3rs.time_scales) + " steps (no normalized progress t/T), "
            "so the schedule extrapolates past the 100-step meta-training horizon",
        "ablations": {k: {**_pick(s["main"]["learned"][k]),
                          "mean_train_loss": round(s["main"]["optimizers"][k]["mean_train_loss"], 5),
                          "n_meta_params": cmp["meta"][k]["n_meta_params"]}
                      for k in ABLATIONS},
        "step_time_vs_adam": round(ratio, 3),
        "optimizer_step_time_vs_adam": round(opt_ratio, 3),
        "step_times_ms": {k: {kk.replace("step_s", "step_ms"): round(1e3 * vv, 4)
                              for kk, vv in v.items()} for k, v in times.items()},
        "step_time_note": "fastest of 15 interleaved 100-step runs per optimizer, one thread, "
                          "tuned Adam vs the learned L3RS on the digits MLP (batch 64); "
                          "the machine is shared with other jobs, so the ratio varies "
                          "from one measurement to the next",
        "table": {st: {k: {"mean_train_loss": round(v["mean_train_loss"], 5),
                           "sem": round(v["sem_train_loss"], 5),
                           "test_acc": round(v["test_acc"], 2), "diverged": v["diverged"]}
                       for k, v in s[st]["optimizers"].items()} for st in SETTINGS},
        "tuned_baselines": cmp["tuned"],
        "budget": {"inner_runs_per_meta_training": cmp["tune_budget"],
                   "inner_runs_per_baseline_tuning": cmp["tune_budget"],
                   "es_steps": base.es.steps, "es_pairs": base.es.pairs,
                   "inner_steps": base.es.horizon},
        "n_meta_params": cmp["meta"]["l3rs"]["n_meta_params"],
        "seeds": {"es_seed": base.seed, "train": list(base.es.train_seeds), "test": TEST_SEEDS},
        "machine": {"cores": os.cpu_count(), "workers": args.workers, "cpu": _cpu_model(),
                    "torch": torch.__version__, "python": platform.python_version(),
                    "platform": platform.platform()},
        "wall_time_s": round(time.time() - t0, 1),
        "cpu_time_s": round(_cpu_seconds() - c0, 1),
        "date": datetime.date.today().isoformat(),
        "run_dir": os.path.relpath(out, ROOT),
    }
    # time spent over all invocations on this run directory (a resumed run adds up)
    timing_path = out / "timing.json"
    timing = read_json(timing_path) if timing_path.exists() else {"invocations": []}
    timing["invocations"].append({"date": result["date"], "wall_s": result["wall_time_s"],
                                  "cpu_s": result["cpu_time_s"], "stages_wall_s": timings})
    atomic_write_json(timing_path, timing)
    result["wall_time_s"] = round(sum(i["wall_s"] for i in timing["invocations"]), 1)
    result["cpu_time_s"] = round(sum(i["cpu_s"] for i in timing["invocations"]), 1)
    result["invocations"] = timing["invocations"]
    result["threads"] = args.threads
    if results_path.exists():  # keep the keys the other stages wrote
        old = read_json(results_path)
        result = {**{k: v for k, v in old.items() if k not in result}, **result}
    atomic_write_json(results_path, result)
    print((out / "compare" / "table.md").read_text())
    print(f"L3RS vs best baseline ({result['best_baseline']}) in the meta-training environment: "
          f"{100 * headline['train_loss_reduction_vs_best_baseline']:+.1f}% mean training loss "
          f"(target >= 20%: {'met' if result['target_20pct_met'] else 'NOT met'}), "
          f"{headline['test_acc_delta_vs_best_baseline']:+.2f} test-accuracy points, "
          f"Wilcoxon p = {headline['wilcoxon_p']:.3g}")
    for k, v in result["ablations"].items():
        print(f"  {k:20s} {100 * v['train_loss_reduction_vs_best_baseline']:+.1f}% "
              f"(acc {v['test_acc_delta_vs_best_baseline']:+.2f}, p = {v['wilcoxon_p']:.3g})")
    print(f"step time vs Adam: {ratio:.2f}x (optimizer.step alone {opt_ratio:.2f}x)")
    print(f"wall {result['wall_time_s']:.0f} s, CPU {result['cpu_time_s']:.0f} s -> {results_path}")


if __name__ == "__main__":
    main()
