"""The herd recipes: YAML copies equal the cached recipes, sizes and lengths differ, the micro
variant of a six-skill recipe builds a model that the composition law can read."""

from __future__ import annotations

from pathlib import Path

import pytest

from reasonlab.config import load_config, to_dict
from reasonlab.models.herd import HERD, HERD_SKILLS, PARTLY_RIGHT
from reasonlab.models.recipes import get_recipe
from reasonlab.solver import SolverConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", sorted(HERD))
def test_yaml_copy_equals_the_recipe(name):
    cfg = load_config(SolverConfig, CONFIGS / f"herd_{name.split('-')[1]}.yaml")
    assert to_dict(cfg) == to_dict(get_recipe(name).config)


def test_herd_spans_sizes_and_lengths_on_one_mix():
    cfgs = [get_recipe(n).config for n in HERD]
    assert len({(c.sft.preset, c.sft.max_steps) for c in cfgs}) == len(HERD) >= 4
    assert len({c.sft.preset for c in cfgs}) >= 2 and len({c.sft.max_steps for c in cfgs}) >= 3
    assert all(to_dict(c.data) == to_dict(cfgs[0].data) for c in cfgs)
    d = cfgs[0].data
    assert d.skills == HERD_SKILLS and len(d.skills) >= 6
    assert d.heldout_template in d.templates and len(d.train_templates) >= 8
    assert d.heldout_pairs and d.solution_style == "columns_all"


def test_partly_right_policy_is_herd_l_stopped_early():
    """MCTS-DPO's starting policy: herd-l's recipe (same data, model, schedule shape) with fewer
    SFT steps, and outside the herd (its table and CPU budget)."""
    ml, big = to_dict(get_recipe(PARTLY_RIGHT).config), to_dict(get_recipe("herd-l").config)
    assert PARTLY_RIGHT not in HERD
    assert ml["sft"].pop("max_steps") < big["sft"].pop("max_steps")
    assert ml == big
