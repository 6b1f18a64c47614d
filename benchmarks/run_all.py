"""Run every benchmark script and write benchmarks/RESULTS.md from benchmarks/results/*.json.

    python benchmarks/run_all.py --list              # the scripts and their result files
    python benchmarks/run_all.py --quick             # run each with --quick (and --threads)
    python benchmarks/run_all.py --only gcg_probe    # some of them
    python benchmarks/run_all.py --table-only        # only regenerate RESULTS.md

RESULTS.md puts each method's measured result next to the paper's claim and the reference it was
compared against (the anchor), with the command that measures it. It is written from the
committed JSON files, so it can be regenerated without rerunning anything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "src"))

from reasonlab.report import fmt_number, fmt_with_interval  # noqa: E402


def n(v: Any) -> str:
    return fmt_number(v) if isinstance(v, (int, float)) else "—" if v is None else str(v)


def pct(v: Any) -> str:
    return f"{fmt_number(100 * v)}%" if isinstance(v, (int, float)) else "—"


def iv(d: dict, key: str, ci_key: str | None = None) -> str:
    return fmt_with_interval(d.get(key), d.get(ci_key or key + "_ci95"))


def _largest(d: dict[str, Any]) -> tuple[str, Any]:
    k = max(d, key=lambda x: float(x))
    return k, d[k]


@dataclass(frozen=True)
class Entry:
    """One row of RESULTS.md: a result file, what it measured, the paper's claim, the anchor."""

    result: str  # file stem under benchmarks/results
    script: str  # benchmark script stem
    method: str
    measured: Callable[[dict], str]
    claim: str
    anchor: str
    command: str = ""


def _mean_ci(d: dict, key: str) -> str:
    """A ``{"mean", "ci95"}`` entry as ``x [a, b]``."""
    v = d.get(key) or {}
    return fmt_with_interval(v.get("mean"), v.get("ci95"))


def _creativity(d: dict) -> str:
    k, diff = _largest(d["marginal_minus_conditional"]["heldout"])
    return (f"E₀ (KL) marginal − conditional at n={k}: "
            f"{fmt_with_interval(diff['mean'], diff.get('ci95'))} over {len(d.get('seeds', []))} seeds")


def _prefix(d: dict) -> str:
    sp = [r.get("speedup") for r in d.get("rows", []) if isinstance(r.get("speedup"), (int, float))]
    return f"shared-prefix sampling {n(min(sp))}–{n(max(sp))}× faster than naive" if sp else "—"


def _not_below(block: dict) -> str:
    """How many generalization settings have test accuracy not significantly (p < 0.05) below
    the best baseline's, of how many."""
    gen = [v for k, v in block.items() if k != "main"]
    ok = sum(not (v["test_acc_delta_vs_best_baseline"] < 0 and v["acc_wilcoxon_p"] < 0.05)
             for v in gen)
    return f"{ok} of {len(gen)}" if gen else "—"


ENTRIES: list[Entry] = [
    Entry("solver", "solver", "SkillMath solver (tiny Llama, pretrain + SFT)",
          lambda d: f"held-out 1-skill {iv(d, 'heldout_1skill_accuracy')}, 2-skill "
                    f"{iv(d, 'heldout_2skill_accuracy')} ({len(d.get('seeds', []))} seeds)",
          "design target: a CPU-sized model learns the embedded skills",
          "majority-answer chance level", "python benchmarks/solver.py"),
    Entry("solver_3skill", "solver", "SkillMath solver, 1–3 skill chains",
          lambda d: f"held-out 1-skill {iv(d, 'heldout_1skill_accuracy')}, 2-skill "
                    f"{iv(d, 'heldout_2skill_accuracy')}, 3-skill {iv(d, 'heldout_3skill_accuracy')}",
          "design target: chains of skills compose", "majority-answer chance level",
          "python benchmarks/solver.py --config configs/solver_3skill.yaml "
          "--json benchmarks/results/solver_3skill.json"),
    Entry("herd", "herd", "Herd + composition law (MATH²)",
          lambda d: f"composition exponent {iv(d, 'composition_exponent')}; best 1-skill "
                    f"{n(d.get('best_1skill'))}",
          "MATH² accuracy ≈ (MATH accuracy)², e ≈ 2 (arXiv:2407.21009)",
          "Y = X^e fitted over the herd's skill pairs", "python benchmarks/herd.py"),
    Entry("posttrain", "posttrain", "Llama 3 post-training (RS-SFT + DPO)",
          lambda d: f"SFT {n(d.get('sft_accuracy'))} → RS+DPO {n(d.get('rs_dpo_accuracy'))}, "
                    f"difference {fmt_with_interval(d.get('difference'), d.get('ci95', {}).get('difference'))}"
                    f" ({d.get('improved_seeds')}/{len(d.get('seeds', []))} seeds improved)",
          "rejection sampling + DPO improve on SFT (arXiv:2407.21783 §4)",
          "the SFT solver; DPO loss vs TRL", "python benchmarks/posttrain.py"),
    Entry("mcts_dpo", "mcts_dpo", "MCTS-DPO",
          lambda d: f"policy {d.get('policy')}: 2-/3-skill accuracy SFT {n(d.get('sft_accuracy_multiskill'))} → "
                    f"MCTS-DPO {n(d.get('mcts_dpo_accuracy_multiskill'))}, paired difference "
                    f"{fmt_with_interval(d.get('paired_diff_mean'), d.get('paired_diff_ci95'))}; "
                    f"instance DPO {n(d.get('instance_dpo_accuracy_multiskill'))}, RS + step DPO "
                    f"{n(d.get('rs_step_dpo_accuracy_multiskill'))}; "
                    f"search {n(d.get('search_speedup'))}× faster with prefix reuse",
          "GSM8K +4.8 points over SFT with Mistral-7B (arXiv:2405.00451)",
          "SFT, instance-level DPO, RS + step DPO at matched generated tokens",
          "python benchmarks/mcts_dpo.py --model herd-ml --prompt-skills 2 3 --extra-test 600 "
          "--set prompts=256 --set root_actions=4 --set n_iters=4 --set rounds=2 --lr 1e-5 --epochs 3"),
    Entry("mcts_dpo_herd_m", "mcts_dpo", "MCTS-DPO on herd1-m (below the 30–70% band)",
          lambda d: f"2-/3-skill accuracy SFT {n(d.get('sft_accuracy_multiskill'))} → MCTS-DPO "
                    f"{n(d.get('mcts_dpo_accuracy_multiskill'))}, paired difference "
                    f"{fmt_with_interval(d.get('paired_diff_mean'), d.get('paired_diff_ci95'))}",
          "GSM8K +4.8 points over SFT with Mistral-7B (arXiv:2405.00451)",
          "SFT, instance-level DPO, RS + step DPO at matched generated tokens",
          "python benchmarks/mcts_dpo.py --quick --model herd1-m --set prompts=12 --set eval_limit=100 "
          "--json-name mcts_dpo_herd_m"),
    Entry("ntkeval", "ntkeval", "NTKEval", lambda d: _generic(d),
          "in context the kernel separates math structure from format (arXiv:2405.15485)",
          "fine-tuning kernels of the same model", "python benchmarks/ntkeval.py"),
    Entry("skills", "skills", "Skill labels + MATH² (oracle over HTTP)", lambda d: _generic(d),
          "skill labels recover skills; MATH² questions are valid and hard (arXiv:2405.12205, "
          "arXiv:2407.21009)", "the SkillMath oracle's true skills and answers",
          "python benchmarks/skills.py"),
    Entry("ptst", "ptst", "PTST (prompt templates and safety)", lambda d: _generic(d),
          "fine-tune without a safety prompt, test with one (arXiv:2402.18540)",
          "the train × test template matrix", "python benchmarks/ptst.py"),
    Entry("blora_compare", "blora_compare", "Bayesian-LoRA",
          lambda d: f"BOPs reduction vs LoRA {iv(d, 'relative_bops_reduction')}; accuracy "
                    f"B-LoRA {iv(d, 'blora_accuracy')} vs LoRA {iv(d, 'lora_accuracy')}",
          "~70% fewer bit operations, on par with LoRA/AdaLoRA (arXiv:2406.13046)",
          "PEFT LoRA r=8 and AdaLoRA", "python benchmarks/blora_compare.py --quick"),
    Entry("l3rs_compare", "l3rs_compare", "Learned optimizer (L3RS)",
          lambda d: f"training loss {pct(d.get('train_loss_reduction_vs_best_baseline'))} lower "
                    f"than the best tuned baseline ({d.get('best_baseline')}), wins {d.get('wins')}, "
                    f"Wilcoxon p {n(d.get('wilcoxon_p'))}; step time {n(d.get('step_time_vs_adam'))}× "
                    f"Adam (LM {n(d.get('step_time_vs_adam_lm'))}×); LM setting: "
                    f"{pct((d.get('lm') or {}).get('train_loss_reduction_vs_best_baseline'))}; "
                    f"held-out meta-objective: accuracy not below the best baseline in "
                    f"{_not_below(d.get('val_objective_generalization') or {})} settings",
          "beats tuned Adam in its environment; prototype ~25% lower loss (arXiv:2408.09310)",
          "Adam, Adam+cosine, SGD+momentum, NSGD+decay, LAMB tuned with equal budget",
          "python benchmarks/l3rs_compare.py [--stage step_time|val_objective|lm|general_lopt]"),
    Entry("gcg_probe", "gcg_probe", "GCG with probe sampling",
          lambda d: f"{iv(d, 'target_forward_ratio')}× fewer target forwards, wall time "
                    f"{iv(d, 'wall_time_ratio')}×; {n(d.get('nanogcg_step_time_ratio'))}× faster "
                    f"per step than nanoGCG",
          "3.5× speed-up (individual behaviours, Llama-2-7b-chat; arXiv:2403.01251)",
          "plain GCG; nanoGCG", "python benchmarks/gcg_probe.py"),
    Entry("creativity", "creativity", "Statistical creativity",
          _creativity, "conditional training stays within the E₀ bound (arXiv:2401.01623)",
          "marginal training of the same model", "python benchmarks/creativity.py --quick"),
    Entry("demo", "demo", "The end-to-end demo (`reasonlab demo`)",
          lambda d: f"--quick {n(d.get('quick_minutes'))} min, full {n(d.get('full_minutes'))} min "
                    f"(empty model cache: every model built in the run); "
                    f"{len(d.get('methods_in_report', []))} methods in the report",
          "issue target: full within 30 min, --quick within 10, on 2 idle cores",
          "—", "python benchmarks/demo.py"),
    Entry("answers", "answers", "Answer grading",
          lambda d: f"property cases {n(d.get('property_pass_rate'))} (math-verify "
                    f"{n(d.get('math_verify_pass_rate'))}), rewritten solutions "
                    f"{n(d.get('rewritten_agreement'))} (math-verify "
                    f"{n(d.get('rewritten_agreement_math_verify'))})",
          "— (infrastructure)", "math-verify", "python benchmarks/answers.py"),
    Entry("generate_speed", "generate_speed", "Generation speed",
          lambda d: f"ours over model.generate at least {n(d.get('min_ratio'))}×, identical "
                    f"tokens: {n(d.get('all_identical'))}",
          "— (infrastructure)", "transformers model.generate", "python benchmarks/generate_speed.py"),
    Entry("portability", "portability", "Saved models read by other transformers versions",
          lambda d: "; ".join(f"{v}: logit max |diff| {n(r.get('logit_max_abs_diff'))}, greedy "
                              f"{'identical' if r.get('greedy_identical') else 'differs'}, tokenizer "
                              f"{'identical' if r.get('tokenizer_identical') else 'differs'}"
                              for v, r in d.get("readers", {}).items()),
          "— (infrastructure)", "the project's own logits, generations and token ids (transformers 5)",
          "python benchmarks/portability.py"),
    Entry("prefix_cache", "prefix_cache", "Prefix cache", _prefix, "— (infrastructure)",
          "sampling without the shared prefix", "python benchmarks/prefix_cache.py --quick"),
    Entry("serve", "serve_load", "Serving (OpenAI API, dynamic batching)",
          lambda d: f"batching {n(d.get('batching_throughput_ratio'))}× one-at-a-time at "
                    f"{d.get('concurrency')} clients, {d.get('failed_requests')} failed",
          "— (infrastructure)", "one request at a time", "python benchmarks/serve_load.py"),
    Entry("train_throughput", "train_throughput", "Training throughput",
          lambda d: f"overhead vs a plain loop {n(d.get('overhead_pct'))}% (CPU time)",
          "— (infrastructure)", "a plain PyTorch loop", "python benchmarks/train_throughput.py"),
    Entry("scaling", "scaling", "Scaling law (IsoFLOP)",
          lambda d: f"exponent α {iv(d, 'alpha')}, R² {n(d.get('r2'))}" + (
              f"; held-out C {d.get('heldout_budget', 0):.2g}: loss predicted "
              f"{n(d.get('heldout_loss_predicted'))} vs measured {n(d.get('heldout_loss_measured'))}, "
              f"accuracy predicted {iv(d.get('heldout_accuracy_predicted') or {}, 'value', 'ci95')} "
              f"vs measured {n(d.get('heldout_accuracy_measured'))}" if d.get("heldout_budget") else "")
          + _forecast_check(d.get("forecast_check") or {}),
          "Llama 3 IsoFLOP fit and two-stage forecast (arXiv:2407.21783 §3.2.1)",
          "its own IsoFLOP minima; a held-out budget",
          "python benchmarks/scaling.py --quick"),
    Entry("ptst_all_templates", "ptst", "PTST, all seven templates (7 × 7)", lambda d: _generic(d),
          "fine-tune without a safety prompt, test with one (arXiv:2402.18540)",
          "the train × test template matrix", "python benchmarks/ptst.py --quick --all-templates"),
    Entry("mcts_dpo_lr2e-4", "mcts_dpo", "MCTS-DPO, stronger update (lr 2e-4, 4 epochs)",
          lambda d: f"multi-skill accuracy SFT {n(d.get('sft_accuracy_multiskill'))} → MCTS-DPO "
                    f"{n(d.get('mcts_dpo_accuracy_multiskill'))}, instance DPO "
                    f"{n(d.get('instance_dpo_accuracy_multiskill'))}",
          "GSM8K +4.8 points over SFT with Mistral-7B (arXiv:2405.00451)",
          "SFT, instance-level DPO, RS + step DPO at matched generated tokens",
          "python benchmarks/mcts_dpo.py --quick --lr 2e-4 --epochs 4"),
    Entry("multimodal", "multimodal", "Vision adapter (Mllama on a frozen tiny Llama)",
          lambda d: f"visual {_mean_ci(d, 'visual_accuracy')}, text ceiling "
                    f"{_mean_ci(d, 'text_ceiling_accuracy')}, no image "
                    f"{_mean_ci(d, 'no_image_accuracy')}; "
                    f"text-only logit difference {n(d.get('text_logit_max_abs_diff'))}",
          "adapters leave text-only behaviour unchanged (arXiv:2407.21783 §7)",
          "the frozen solver given the problem as text; a model that sees no image",
          "python benchmarks/multimodal.py --quick"),
    Entry("llama3_recipe", "llama3_recipe", "Llama 3 recipe: MFU, long-context stages, annealing",
          lambda d: "MFU " + ", ".join(f"{k} {n(v)}" for k, v in (d.get("mfu") or {}).items())
                    + f" of a {n(d.get('matmul_peak_gflops'))} GFLOP/s same-run matmul peak; "
                    f"passkey at the final length {pct(d.get('passkey_accuracy_extended'))} extended "
                    f"vs {pct(d.get('passkey_accuracy_base'))} base, short-context loss "
                    f"{n(d.get('short_context_loss_change_pct'))}%; anneal loss delta "
                    f"{fmt_with_interval(d.get('anneal_loss_delta'), d.get('anneal_loss_delta_ci95'))}, "
                    f"averaging {fmt_with_interval(d.get('averaging_loss_delta'), d.get('averaging_loss_delta_ci95'))}",
          "MFU 38-43% (405B on H100s); stages solve passkey with short-context loss recovered; "
          "annealing on high-quality data helps, averaging does not hurt (arXiv:2407.21783 §3.3-3.4)",
          "a square matmul timed in the same run; the un-extended model; continuing the main "
          "schedule for the same tokens",
          "python benchmarks/train_throughput.py --mfu-only --threads 1; "
          "python benchmarks/llama3_recipe.py --threads 1"),
    Entry("mutation", "mutation", "Mutation score of the core (tests catch mistakes)",
          lambda d: f"overall {pct(d.get('overall_score'))} "
                    f"[{pct((d.get('overall_interval95') or [None, None])[0])}, "
                    f"{pct((d.get('overall_interval95') or [None, None])[1])}] over "
                    f"{d.get('n_modules')} modules measured, "
                    f"{d.get('modules_at_or_above_0.9')} at ≥90%; "
                    f"{len(d.get('survivors', []))} survivors",
          "issue target: ≥90% per core module", "ast mutants, one at a time, against the module's tests",
          "python benchmarks/mutation.py --max-mutants 40 --budget-minutes 20"),
    Entry("cli_faults", "cli_faults", "CLI faults",
          lambda d: f"{d.get('clear_errors')}/{d.get('error_cases', d.get('cases'))} bad inputs "
                    f"give a clear error, work lost {d.get('work_lost')}; README examples: "
                    f"{d.get('readme_examples_run')} of {d.get('readme_examples_total')} run here "
                    "(the rest under pytest -m slow)",
          "— (infrastructure)", "—", "python benchmarks/cli_faults.py"),
]


def scripts() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_")
                  and p.stem != "run_all")


def result_files() -> list[Path]:
    return sorted(RESULTS.glob("*.json"))


def _forecast_check(fc: dict) -> str:
    """The scaling benchmark's pre-registered forecast, once measured."""
    if fc.get("status") != "measured":
        return ""
    return (f"; pre-registered C {fc['budget']:.2g}: measured {fc['loss_measured']:.3f}, envelope "
            f"{fc['envelope']['loss_predicted']:.3f} ({100 * fc['envelope']['loss_rel_error']:.1f}% "
            f"off), power law {fc['power_law']['loss_predicted']:.3f} "
            f"({100 * fc['power_law']['loss_rel_error']:.1f}% off)")


def _generic(d: dict) -> str:
    nums = [(k, v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("threads", "seed")]
    return ", ".join(f"{k} {n(v)}" for k, v in nums[:4]) or "see the file"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def results_table() -> str:
    """RESULTS.md's text from the committed result files."""
    by_stem = {e.result: e for e in ENTRIES}
    rows = []
    for path in result_files():
        stem = path.stem
        d = json.loads(path.read_text())
        e = by_stem.get(stem)
        if e is None and stem.endswith("_quick") and stem[:-6] in by_stem:
            continue  # the quick copy of a listed result
        try:
            measured = e.measured(d) if e else _generic(d)
        except (KeyError, TypeError, ValueError) as err:
            measured = f"(unreadable: {type(err).__name__} {err})"
        date = d.get("date", "—")
        if e:
            rows.append((e.method, measured, e.claim, e.anchor, f"`{e.command}`", f"{stem}.json", date))
        else:
            script = stem if stem in scripts() else "?"
            rows.append((stem, measured, "(no claim listed)", "—",
                         f"`python benchmarks/{script}.py`", f"{stem}.json", date))
    order = {e.result: i for i, e in enumerate(ENTRIES)}
    rows.sort(key=lambda r: order.get(r[5][:-5], len(order)))
    head = ("| method | measured here | the paper's claim | compared with | command | file | date |\n"
            "|---|---|---|---|---|---|---|\n")
    body = "".join("| " + " | ".join(_cell(c) for c in r) + " |\n" for r in rows)
    return ("# Benchmark results\n\n"
            "Written by `python benchmarks/run_all.py --table-only` from the committed "
            "`benchmarks/results/*.json` (each holds its seeds, machine and date). Numbers are "
            "rounded to three significant digits; `x [a, b]` is a value with its 95% interval. "
            "Timings come from a shared, heavily loaded 2-core machine unless the file says "
            "otherwise. Tiny CPU models stand in for the papers' models, so a claim is compared "
            "in direction and rough size, not in value.\n\n" + head + body)


def write_results_md(path: Path = HERE / "RESULTS.md") -> Path:
    path.write_text(results_table())
    return path


def run_scripts(names: list[str], quick: bool, threads: int) -> list[tuple[str, int, float]]:
    out = []
    for name in names:
        src = (HERE / f"{name}.py").read_text()
        cmd = [sys.executable, str(HERE / f"{name}.py")]
        if quick and "--quick" in src:
            cmd.append("--quick")
        if "--threads" in src:
            cmd += ["--threads", str(threads)]
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t0 = time.time()
        rc = subprocess.call(cmd)
        out.append((name, rc, time.time() - t0))
        print(f"== {name}: exit {rc}, {(time.time() - t0) / 60:.1f} min", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to every script")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per script (default 1)")
    ap.add_argument("--list", action="store_true", help="list the scripts and result files")
    ap.add_argument("--only", nargs="*", default=[], help="run only these scripts")
    ap.add_argument("--table-only", action="store_true", help="only write RESULTS.md")
    args = ap.parse_args(argv)
    known = scripts()
    if args.list:
        results: dict[str, str] = {}
        for e in ENTRIES:
            results.setdefault(e.script, e.result)
        for s in known:
            r = results.get(s, s)
            have = (RESULTS / f"{r}.json").exists()
            print(f"{s:<18} results/{r}.json{'' if have else ' (not yet measured)'}")
        return 0
    bad = [s for s in args.only if s not in known]
    if bad:
        print(f"error: unknown benchmark {', '.join(bad)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    failed = []
    if not args.table_only:
        for name, rc, _ in run_scripts(args.only or known, args.quick, args.threads):
            if rc != 0:
                failed.append(name)
    print(f"wrote {write_results_md()}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
