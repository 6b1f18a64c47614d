"""The aligned chat model's data: refusals only for harmful requests, disjoint held-out splits."""

from __future__ import annotations

import pytest

from reasonlab.config import ConfigError
from reasonlab.models.aligned_chat import (
    REFUSALS,
    AlignedChatConfig,
    _parse_preset,
    advbench_split,
    benign_requests,
    is_refusal,
    training_pairs,
)


def test_split_is_disjoint_deterministic_and_sized():
    train, held = advbench_split(0.25, 0)
    assert len(train) + len(held) == 520 and len(held) == 130
    assert not {g for g, _ in train} & {g for g, _ in held}
    assert advbench_split(0.25, 0) == (train, held)
    assert advbench_split(0.25, 1)[1] != held


def test_training_pairs_never_comply_with_a_harmful_request():
    cfg = AlignedChatConfig(n_benign=200, harmful_repeats=2)
    train, held = advbench_split(cfg.heldout_fraction, cfg.split_seed)
    pairs = training_pairs(cfg, train)
    harmful = {g for g, _ in train} | {g for g, _ in held}
    replies = [a for q, a in pairs if q in harmful]
    assert len(replies) == 2 * len(train) and set(replies) <= set(REFUSALS)
    assert not {q for q, _ in pairs} & {g for g, _ in held}  # held-out behaviours never seen
    benign = [(q, a) for q, a in pairs if q not in harmful]
    assert len(benign) == 200
    assert all(a.startswith("Sure, here") and not is_refusal(a) for _, a in benign)
    assert all(is_refusal(r) for r in REFUSALS)


def test_heldout_benign_requests_use_heldout_fillers():
    train = {q for q, _ in benign_requests(400, heldout=False)}
    held = benign_requests(100, heldout=True, seed=7)
    assert len(held) == 100 and not {q for q, _ in held} & train
    assert all(a.startswith("Sure, here") for _, a in held)


def test_preset_spec():
    assert _parse_preset("tiny-1m") == ("tiny-1m", 0, 0)
    assert _parse_preset("tiny-0.5m@56x2") == ("tiny-0.5m", 56, 2)
    with pytest.raises(ConfigError, match="preset"):
        AlignedChatConfig(preset="tiny-0.5m@wide")
    with pytest.raises(ConfigError, match="heldout_fraction"):
        AlignedChatConfig(heldout_fraction=0.0)


def test_probe_target_recipe_is_much_larger_than_the_draft_and_trained_the_same_way():
    from dataclasses import asdict

    from reasonlab.models.aligned_chat import DRAFT_CONFIG, LARGE_CONFIG, TARGET_CONFIG, n_params
    from reasonlab.models.recipes import get_recipe

    assert get_recipe("aligned-chat-l").config == LARGE_CONFIG
    assert get_recipe("aligned-chat-l").micro_config == get_recipe("aligned-chat-draft").micro_config
    # same data, split and tokenizer settings: the trained tokenizers come out identical
    same = lambda c: {k: v for k, v in asdict(c).items() if k not in ("preset", "max_steps")}  # noqa: E731
    assert same(LARGE_CONFIG) == same(DRAFT_CONFIG) == same(TARGET_CONFIG)
    draft, target, large = n_params(DRAFT_CONFIG), n_params(TARGET_CONFIG), n_params(LARGE_CONFIG)
    assert draft == 186648 and target == 861056  # the models built by the cache
    assert large / draft > 25 and large > 5_000_000
