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
