"""Every YAML preset in configs/ loads into its config class (keys exist, values validate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reasonlab.config import load_config
from reasonlab.data.skillmath import SkillMathConfig
from reasonlab.llama.scaling import ScalingConfig
from reasonlab.optim.compare import CompareConfig
from reasonlab.peft.compare import CompareConfig as BLoRACompareConfig
from reasonlab.optim.es import MetaTrainConfig
from reasonlab.posttrain import PosttrainConfig
from reasonlab.solver import SolverConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CLASS_BY_FILE = {
    "blora_base.yaml": SolverConfig,
    "blora_compare.yaml": BLoRACompareConfig,
    "optimizer_compare.yaml": CompareConfig,
    "optimizer_full.yaml": MetaTrainConfig,
    "optimizer_quick.yaml": MetaTrainConfig,
    "posttrain_quick.yaml": PosttrainConfig,
    "herd_l.yaml": SolverConfig,
    "herd_m.yaml": SolverConfig,
    "herd_s.yaml": SolverConfig,
    "herd_xs.yaml": SolverConfig,
    "posttrain_solver.yaml": SolverConfig,
    "scaling_quick.yaml": ScalingConfig,
    "skillmath_default.yaml": SkillMathConfig,
    "skillmath_quick.yaml": SkillMathConfig,
    "skillmath_tiny.yaml": SkillMathConfig,
    "solver_3skill.yaml": SolverConfig,
    "solver_micro.yaml": SolverConfig,
    "solver_quick.yaml": SolverConfig,
}
# keys a preset leaves to the command line
OVERRIDES = {"optimizer_compare.yaml": ["learned.l3rs=runs/l3rs"]}


def test_every_shipped_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(CLASS_BY_FILE)


@pytest.mark.parametrize("name", sorted(CLASS_BY_FILE))
def test_shipped_config_loads(name):
    cfg = load_config(CLASS_BY_FILE[name], CONFIGS / name, OVERRIDES.get(name, []))
    assert isinstance(cfg, CLASS_BY_FILE[name])


def test_posttrain_preset_runs_the_measured_recipe():
    cfg = load_config(PosttrainConfig, CONFIGS / "posttrain_quick.yaml")
    assert cfg.do_rs_sft and cfg.pair_unit == "step"
    assert (cfg.dpo.beta, cfg.dpo.nll_weight) == (0.1, 1.0) and cfg.dpo.exclude_format_tokens
