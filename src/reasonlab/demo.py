"""The end-to-end demo (``reasonlab demo``): SkillMath and the tiny herd through every method that
exists.

Stages (each a run directory under ``out``; a finished stage is skipped when rerun):

1. ``solver``  — SkillMath data, tokenizer, tiny Llama pretraining + SFT, per-skill evaluation.
2. ``samples`` — generations of the solver on held-out problems, through ``LocalLM``.
3. ``report.html`` — one HTML page over all stage directories.

``preset="quick"`` is the real demo (minutes on a 2-core CPU); ``"micro"`` checks the wiring.
"""

from __future__ import annotations

import logging
from pathlib import Path

from reasonlab.runs import atomic_write_json, read_json

log = logging.getLogger(__name__)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PRESETS = ("quick", "micro")


def _config_path(name: str) -> Path:
    p = CONFIGS / name
    if not p.exists():
        raise FileNotFoundError(f"preset config not found: {p}")
    return p


def stage_solver(out: Path, preset: str) -> dict:
    from reasonlab.config import load_config
    from reasonlab.solver import SolverConfig, run_solver

    cfg = load_config(SolverConfig, _config_path(f"solver_{preset}.yaml"))
    return run_solver(cfg, out)


def stage_samples(solver_dir: Path, out: Path, n: int = 8) -> dict:
    """Greedy solutions of held-out problems by the trained solver, checked by the verifier."""
    from reasonlab.data.skillmath import format_prompt, read_problems
    from reasonlab.evals.accuracy import QA_STOP, is_correct
    from reasonlab.lm.local import LocalLM

    if (out / "samples.json").exists():
        return read_json(out / "samples.json")
    model_dir = _find_model(solver_dir)
    problems = read_problems(solver_dir / "data" / "test.jsonl")[:n]
    lm = LocalLM.from_pretrained(model_dir)
    gens = lm.generate([format_prompt(p.question) for p in problems], max_new_tokens=192, stop=[QA_STOP])
    rows = [{"question": p.question, "generated": g.text, "reference": p.answer,
             "correct": is_correct(g.text, p.answer)} for p, g in zip(problems, gens)]
    result = {"samples": rows, "correct": sum(r["correct"] for r in rows), "n": len(rows)}
    atomic_write_json(out / "samples.json", result)
    return result


def _find_model(solver_dir: Path) -> Path:
    for cand in (solver_dir / "sft" / "model", solver_dir / "model"):
        if (cand / "config.json").exists():
            return cand
    raise FileNotFoundError(f"no trained model under {solver_dir}")


def run_demo(out: str | Path, preset: str = "quick") -> Path:
    """Run every stage into ``out`` and write ``out/report.html``; returns the report path."""
    from reasonlab.report import write_report

    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset '{preset}'; known: {', '.join(PRESETS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log.info("stage 1/2: tiny SkillMath solver (%s)", preset)
    stage_solver(out / "solver", preset)
    log.info("stage 2/2: samples from the solver")
    samples = stage_samples(out / "solver", out / "samples")
    for row in samples["samples"][:4]:
        log.info("Q: %s\n%s  [%s]", row["question"], row["generated"].strip(), "ok" if row["correct"] else "wrong")
    report = write_report([out / "solver", out / "samples"], out / "report.html", title="reasonlab demo")
    log.info("report: %s", report)
    return report
