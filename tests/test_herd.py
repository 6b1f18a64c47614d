"""The herd recipes: YAML copies equal the cached recipes, sizes and lengths differ, the micro
variant of a six-skill recipe builds a model that the composition law can read."""

from __future__ import annotations

from pathlib import Path

import pytest

from reasonlab.config import load_config, to_dict
from reasonlab.models.herd import (BEST, FIRST_HERD_STEPS, HERD, HERD_SKILLS, PARTLY_RIGHT, SEED_REPLICAS,
                                   first_herd_name, seed_replica)
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
    """MCTS-DPO's starting policy: the first herd's herd-l (what the recorded MCTS-DPO results
    were measured from) with fewer SFT steps, and outside the herd (its table and CPU budget)."""
    ml, big = to_dict(get_recipe(PARTLY_RIGHT).config), to_dict(get_recipe("herd1-l").config)
    assert PARTLY_RIGHT not in HERD
    assert ml["sft"].pop("max_steps") < big["sft"].pop("max_steps")
    assert ml == big


@pytest.mark.parametrize("name", sorted(HERD))
def test_first_herd_differs_only_in_vocabulary_rows_and_precision(name):
    old, new = to_dict(get_recipe(first_herd_name(name)).config), to_dict(get_recipe(name).config)
    assert (old.pop("vocab_size"), new.pop("vocab_size")) == (272, 512)
    assert (old["sft"].pop("seq_len"), new["sft"].pop("seq_len")) == (384, 256)
    assert (old["sft"].pop("precision"), new["sft"].pop("precision")) == ("auto", "bf16")
    steps = new["sft"]["max_steps"]
    assert old["sft"].pop("max_steps") == FIRST_HERD_STEPS.get(name, steps)
    new["sft"].pop("max_steps")
    old["sft"].pop("warmup_steps"), new["sft"].pop("warmup_steps")
    assert old == new


def test_herd_uses_a_bpe_vocabulary_and_bf16():
    """Every member (and the micro variants) trains with 512 tokens and bf16 autocast; the longest
    training document fits a 256-token row."""
    for n in HERD:
        r = get_recipe(n)
        for c in (r.config, r.micro_config):
            assert c.vocab_size == 512 and c.sft.precision == "bf16" and c.sft.seq_len == 256


def test_seed_replicas_differ_from_the_best_recipe_only_in_the_seed():
    for seed in SEED_REPLICAS:
        rep = to_dict(get_recipe(seed_replica(BEST, seed)).config)
        best = to_dict(get_recipe(BEST).config)
        assert rep.pop("seed") == seed and best.pop("seed") == 0
        assert rep == best
    assert seed_replica(BEST, 0) == BEST
