"""SkillMath solver recipes for the model cache: the tiny solvers every method starts from.

Each recipe is a :class:`reasonlab.solver.SolverConfig` built by :func:`build_solver` (the
solver pipeline: SkillMath data → character tokenizer → SFT of a tiny Llama → per-skill greedy
evaluation) into an HF model folder that also holds ``solver_results.json`` (the pipeline's
results: per-skill accuracy, held-out template and pair accuracy, training minutes) and
``eval_predictions.jsonl`` (every evaluated problem: set, id, skills, correctness).

Recipes (``reasonlab models list`` shows them with their cache state):

- ``solver-addsub``: ``configs/solver_quick.yaml`` (add/sub, columns, 1–2 skills; measured 99%).
- ``solver-3skill``: ``configs/solver_3skill.yaml`` (add/sub chains of 1–3 skills).
- the six-skill herd (``herd-xs``, ``herd-s``, ``herd-m``, ``herd-l``) is registered by
  :mod:`reasonlab.models.herd`.

Every recipe trains with one torch thread (the machine is shared) and has a micro variant
(``configs/solver_micro.yaml`` shape, no evaluation) that builds in seconds.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path
from typing import Any

from reasonlab.config import from_dict
from reasonlab.models import PREDICTIONS_FILE, RESULTS_FILE
from reasonlab.models.recipes import Recipe, register
from reasonlab.solver import SolverConfig



_TRAIN = {"lr": 0.003, "warmup_steps": 100, "min_lr_ratio": 0.1, "eval_every": 250,
          "eval_batches": 4, "checkpoint_every": 250, "log_every": 10, "device": "cpu"}

# configs/solver_quick.yaml (the measured add/sub recipe), one thread.
ADDSUB: dict[str, Any] = {
    "seed": 0, "threads": 1, "vocab_size": 272, "digits": "single",
    "data": {"seed": 0, "n_train": 8000, "n_val": 200, "n_test": 500, "n_test_template": 200,
             "n_test_pair": 200, "skills": ["add", "sub"], "k_weights": [0.5, 0.5, 0.0],
             "min_number": 1, "max_number": 99, "max_factor": 9, "max_answer": 99,
             "templates": [0, 1], "variants": [0], "heldout_template": 1,
             "heldout_pairs": ["sub>add"], "solution_style": "columns"},
    "do_pretrain": False,
    "sft": {"preset": "tiny-2m", "seq_len": 224, "batch_size": 24, "max_steps": 1000, **_TRAIN},
    "eval": {"sets": ["test_k1", "test_k2", "test_template", "test_pair"], "limit": 300,
             "max_new_tokens": 160, "batch_size": 64},
}

# configs/solver_micro.yaml without the evaluation: builds in seconds (tests).
MICRO: dict[str, Any] = {
    "seed": 0, "threads": 1, "vocab_size": 272, "digits": "single",
    "data": {"seed": 0, "n_train": 200, "n_val": 20, "n_test": 20, "n_test_template": 10,
             "n_test_pair": 10, "skills": ["add", "sub"], "k_weights": [0.8, 0.2, 0.0],
             "min_number": 1, "max_number": 30, "max_factor": 5, "max_answer": 99,
             "templates": [0, 1], "variants": [0], "heldout_template": 1,
             "heldout_pairs": ["add>sub"]},
    "do_pretrain": False,
    "sft": {"preset": "tiny-0.5m", "seq_len": 128, "batch_size": 16, "max_steps": 10, "lr": 0.003,
            "warmup_steps": 2, "eval_every": 10, "eval_batches": 1, "checkpoint_every": 10,
            "log_every": 10, "device": "cpu"},
    "eval": {"sets": [], "limit": 30, "max_new_tokens": 40, "batch_size": 64},
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in (nested mappings merged key by key)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def solver_config(base: dict[str, Any], **overrides: Any) -> SolverConfig:
    """A validated :class:`SolverConfig` from ``base`` with nested ``overrides``."""
    return from_dict(SolverConfig, merge(base, overrides))


def build_solver(cfg: SolverConfig, out_dir: Path) -> None:
    """Run the solver pipeline in a scratch folder next to ``out_dir`` and keep the fine-tuned
    model (with its tokenizer) and the pipeline's results in ``out_dir``."""
    from reasonlab.runs import atomic_write_json, read_jsonl, write_jsonl
    from reasonlab.solver import run_solver

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".solver-run-") as tmp:
        res = run_solver(cfg, tmp, progress=False)
        model = Path(tmp) / "sft" / "model"
        for p in model.iterdir():
            if p.is_file():
                shutil.copy2(p, out_dir / p.name)
        atomic_write_json(out_dir / RESULTS_FILE, res)
        recs = []
        for name in cfg.eval.sets:  # per-problem predictions, for per-pair analyses
            pred = Path(tmp) / "eval" / name / "predictions.jsonl"
            if pred.exists():
                recs += [{"set": name, **r} for r in read_jsonl(pred)]
        write_jsonl(out_dir / PREDICTIONS_FILE, recs)


def solver_recipe(name: str, full: dict[str, Any], description: str,
                  micro: dict[str, Any] | None = None, version: int = 1) -> Recipe:
    """Register a solver recipe from a full config mapping (and an optional micro one)."""
    return register(Recipe(name=name, config=from_dict(SolverConfig, full), build=build_solver,
                           micro_config=from_dict(SolverConfig, micro or MICRO),
                           description=description, version=version))


solver_recipe("solver-addsub", ADDSUB,
              "add/sub solver, column-style solutions, 1-2 skill chains (configs/solver_quick.yaml)")
solver_recipe("solver-3skill",
              merge(ADDSUB, {"data": {"k_weights": [0.4, 0.4, 0.2]}, "sft": {"seq_len": 256},
                             "eval": {"sets": ["test_k1", "test_k2", "test_k3", "test_template",
                                               "test_pair"], "max_new_tokens": 224}}),
              "add/sub solver with 1-3 skill chains (configs/solver_3skill.yaml)")
