"""The six-skill SkillMath solvers (the herd) for the model cache.

All train on one mix (:data:`SKILLS6`): add, sub, mul, div, rem and cmp, numbers up to 30,
every intermediate result up to 300, chains of 1–3 skills (40/40/20%), templates 0–7 of the
nine SkillMath wordings in both variants (template 8 held out), the skill pairs ``mul>sub`` and
``div>add`` held out, and ``columns_all`` solutions: add/sub column by column, mul by one digit
digit by digit, div/rem by long division, cmp as the column subtraction of the smaller number
(DESIGN.md, "Where a wider solver starts": the skills without a step-by-step written form were
the ones not learned).

The herd varies model size and training length on that mix so per-skill success spreads from
weak to strong — what the composition law (:mod:`reasonlab.evals.composition`) is fitted on.
Each recipe evaluates on 1-, 2- and 3-skill test problems, the held-out template and the held-out
pairs; the per-problem predictions stay in the model folder (``eval_predictions.jsonl``).

The YAML copies under ``configs/herd_*.yaml`` run the same pipelines with
``reasonlab train-solver -c`` (a test checks that they equal the recipes).
"""

from __future__ import annotations

from typing import Any

from reasonlab.models.solvers import MICRO, merge, solver_recipe

HERD_SKILLS = ["add", "sub", "mul", "div", "rem", "cmp"]

SKILLS6: dict[str, Any] = {
    "seed": 0, "threads": 1, "vocab_size": 272, "digits": "single",
    "data": {"seed": 0, "n_train": 20000, "n_val": 100, "n_test": 400, "n_test_template": 100,
             "n_test_pair": 100, "skills": HERD_SKILLS, "k_weights": [0.4, 0.4, 0.2],
             "min_number": 1, "max_number": 30, "max_factor": 9, "max_answer": 300,
             "templates": [0, 1, 2, 3, 4, 5, 6, 7, 8], "variants": [0, 1], "heldout_template": 8,
             "heldout_pairs": ["mul>sub", "div>add"], "solution_style": "columns_all"},
    "do_pretrain": False,
    "sft": {"preset": "tiny-1m", "seq_len": 384, "batch_size": 12, "max_steps": 400, "lr": 0.003,
            "warmup_steps": 40, "min_lr_ratio": 0.1, "eval_every": 400, "eval_batches": 2,
            "checkpoint_every": 200, "log_every": 10, "device": "cpu"},
    "eval": {"sets": ["test_k1", "test_k2", "test_k3", "test_template", "test_pair"], "limit": 0,
             "max_new_tokens": 160, "batch_size": 64},
}

MICRO6 = merge(MICRO, {"data": {"skills": HERD_SKILLS, "max_answer": 300,
                                "templates": [0, 1, 2, 3, 4, 5, 6, 7, 8], "heldout_template": 8,
                                "heldout_pairs": ["mul>sub"], "solution_style": "columns_all"},
                       "sft": {"seq_len": 384}})

# The herd trains on the mix with a 512-token vocabulary (BPE merges for the words, still one
# digit per token): a problem is 97 tokens instead of 172 at 272 (one byte per token), so rows of
# 256 tokens hold more problems than rows of 384 did; and with bf16 autocast on the CPU (weights,
# optimizer and loss in fp32). Together a step costs about 0.4 of the byte-level fp32 one.
FAST: dict[str, Any] = {"vocab_size": 512, "sft": {"seq_len": 256, "precision": "bf16"}}

# name -> (model preset, SFT steps, batch size): small and short to large and long, so that
# per-skill success spreads from weak to strong on one mix.
HERD: dict[str, tuple[str, int, int]] = {
    "herd-xs": ("tiny-0.5m", 300, 12),
    "herd-s": ("tiny-1m", 700, 12),
    "herd-m": ("tiny-2m", 600, 16),
    "herd-l": ("tiny-2m", 1400, 16),
}
# The first herd's lengths (its herd-m and herd-l trained 1200 and 2800 steps): in the faster form
# tiny-2m reaches 100% on one-skill and 85% on two-skill problems in 1200 steps, so the herd's
# tiny-2m members train half as long and the whole herd fits its CPU budget.
FIRST_HERD_STEPS = {"herd-m": 1200, "herd-l": 2800}

# The best member is also built with training seeds 1 and 2 (model initialization and batch order;
# the SkillMath splits stay those of ``data.seed``): ``herd-l-seed1``, ``herd-l-seed2``.
BEST = "herd-l"
SEED_REPLICAS = (1, 2)


def _sft(name: str, steps: int) -> dict[str, Any]:
    """The SFT keys of herd member ``name`` trained ``steps`` steps."""
    preset, _, batch = HERD[name]
    return {"preset": preset, "max_steps": steps, "batch_size": batch,
            "warmup_steps": min(100, steps // 10)}


def herd_config(name: str, seed: int = 0) -> dict[str, Any]:
    """The config mapping of herd member ``name`` (trained with ``seed``)."""
    return merge(merge(SKILLS6, FAST), {"seed": seed, "sft": _sft(name, HERD[name][1])})


def seed_replica(name: str, seed: int) -> str:
    """The recipe name of herd member ``name`` trained with ``seed`` (seed 0 is ``name``)."""
    return name if seed == 0 else f"{name}-seed{seed}"


MICRO_HERD = merge(MICRO6, FAST)

for _name, (_preset, _steps, _) in HERD.items():
    solver_recipe(_name, herd_config(_name),
                  f"six-skill solver (herd), {_preset}, {_steps} SFT steps", micro=MICRO_HERD)
for _seed in SEED_REPLICAS:
    solver_recipe(seed_replica(BEST, _seed), herd_config(BEST, _seed),
                  f"{BEST} trained with seed {_seed} (a seed replica, outside the herd's table)",
                  micro=merge(MICRO_HERD, {"seed": _seed}))


# The first herd (byte-level 272-token vocabulary, 384-token rows, fp32): the same members before
# the faster form above. Kept under ``herd1-*`` for the results measured on it (B-LoRA, NTKEval,
# the L3RS LM setting, the skill labels, the multimodal solver and the herd-l MCTS-DPO run).
def first_herd_config(name: str) -> dict[str, Any]:
    """The config mapping of ``name`` in the first herd."""
    return merge(SKILLS6, {"sft": _sft(name, FIRST_HERD_STEPS.get(name, HERD[name][1]))})


def first_herd_name(name: str) -> str:
    """``herd-m`` -> ``herd1-m``."""
    return name.replace("herd-", "herd1-", 1)


for _name, (_preset, _steps, _) in HERD.items():
    solver_recipe(first_herd_name(_name), first_herd_config(_name),
                  f"the first herd's {_name} (byte-level vocabulary, fp32), {_preset}, "
                  f"{FIRST_HERD_STEPS.get(_name, _steps)} SFT steps", micro=MICRO6)

# A partly-right policy for the MCTS-DPO benchmark: the first herd's herd-l stopped at 1800 SFT
# steps. Not a herd member, so the herd's table and CPU budget leave it out.
PARTLY_RIGHT = "herd-ml"
solver_recipe(PARTLY_RIGHT, merge(first_herd_config("herd-l"), {"sft": {"max_steps": 1800}}),
              "six-skill solver, tiny-2m, 1800 SFT steps (a partly-right policy for MCTS-DPO)",
              micro=MICRO6)
