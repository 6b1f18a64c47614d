"""SkillMath generator rules pinned value by value: which numbers a step may divide or take a
percentage of, the config's bounds, the difficulty threshold, the retry budget of a step and a
forced pair in a one-step chain."""

from __future__ import annotations

import dataclasses
import random

import pytest

from reasonlab.config import ConfigError
from reasonlab.data import skillmath as S


def test_division_needs_a_positive_result_to_divide():
    cfg = S.SkillMathConfig()
    rng = random.Random(0)
    for x in (0, -6, -12):
        assert S.SKILLS["div"].sample(rng, x, cfg) is None
    args = S.SKILLS["div"].sample(rng, 12, cfg)
    assert args["x"] == 12 and args["b"] in (2, 3, 4, 6)
    assert S.SKILLS["div"].sample(rng, 13, cfg) is None  # prime above max_factor


def test_percentage_first_step_draws_a_number_with_a_whole_percentage():
    cfg = S.SkillMathConfig()
    for seed in range(20):
        args = S.SKILLS["pct"].sample(random.Random(seed), None, cfg)
        assert args is not None, seed
        assert args["p"] in S._PCTS and args["x"] * args["p"] % 100 == 0
        assert cfg.min_number <= args["x"] <= cfg.max_number


def test_variants_are_0_and_1_only():
    assert S.N_VARIANTS == 2
    S.SkillMathConfig(variants=[0, 1])
    with pytest.raises(ConfigError, match="variants"):
        S.SkillMathConfig(variants=[2])
    p = S.sample_problems(S.SkillMathConfig(), 1, seed=0)[0]
    assert S.render(p, variant=1).variant == 1
    with pytest.raises(ConfigError, match="variant"):
        S.render(p, variant=2)


def test_max_answer_bounds():
    assert S.SkillMathConfig(max_answer=10**9).max_answer == 10**9
    assert S.SkillMathConfig(max_number=10, max_answer=10).max_answer == 10
    for bad in (10**9 + 1, 9):
        with pytest.raises(ConfigError, match="max_answer"):
            S.SkillMathConfig(max_number=5, max_answer=bad)


def test_difficulty_counts_three_digit_numbers_from_100():
    step = {"skill": "add", "args": {"x": 7, "b": 5}}
    assert S._difficulty([step], 12) == 1
    assert S._difficulty([step], 99) == 1
    assert S._difficulty([step], 100) == 2
    assert S._difficulty([step, step], 100) == 3
    assert S._difficulty([{"skill": "add", "args": {"x": 100, "b": [1, 2]}}], 3) == 2
    assert S._difficulty([{"skill": "add", "args": {"x": 3, "b": [99, 100]}}], 3) == 2


def test_a_step_is_tried_eight_times_before_the_chain_is_dropped(monkeypatch):
    calls = []

    def never(rng, x, cfg):
        calls.append(x)
        return None

    monkeypatch.setitem(S.SKILLS, "add", dataclasses.replace(S.SKILLS["add"], sample=never))
    assert S._sample_chain(random.Random(0), S.SkillMathConfig(), ["add"], [0]) is None
    assert len(calls) == 8


def test_forced_pair_in_a_one_step_chain_makes_two_steps():
    cfg = S.SkillMathConfig()
    for seed in range(5):
        chain = S._draw_chain(random.Random(seed), cfg, 1, ["add", "sub"], set(), {("mul", "div")})
        assert chain == ["mul", "div"]


def test_sampling_gives_up_after_100n_plus_1000_tries(monkeypatch):
    calls = []

    def never(rng, cfg, chain, templates):
        calls.append(chain)
        return None

    monkeypatch.setattr(S, "_sample_chain", never)
    with pytest.raises(ConfigError, match="could only make 0 of 2"):
        S.sample_problems(S.SkillMathConfig(), 2, seed=0)
    assert len(calls) == 100 * 2 + 1000


def test_template_0_can_be_the_held_out_one():
    small = dict(n_train=20, n_val=5, n_test=5, n_test_template=6, n_test_pair=0)
    splits = S.generate(S.SkillMathConfig(**small, templates=[0, 1, 2], heldout_template=0))
    assert len(splits["test_template"]) == 6
    for p in splits["test_template"]:
        assert all(s["template"] == 0 for s in p.meta["steps"])
    assert all(s["template"] != 0 for p in splits["train"] for s in p.meta["steps"])
    none = S.generate(S.SkillMathConfig(**small, heldout_template=-1))
    assert none["test_template"] == []
