"""Learning-rate and batch-size schedules pinned to exact values at chosen steps.

A warmup that is one step off, or a cosine that decays to zero instead of its floor, trains
almost as well on a tiny model, so only the numbers themselves catch it.
"""

import math

import pytest

from reasonlab.llama.schedules import batch_size_at, warmup_cosine_lr
from reasonlab.training.dpo import DPOConfig, _lr_factor


def _lr(step, **kw):
    base = dict(peak_lr=2.0, warmup_steps=4, total_steps=12, min_lr_ratio=0.1)
    base.update(kw)
    return warmup_cosine_lr(step, **base)


def test_warmup_is_linear_from_the_first_step_and_reaches_the_peak_on_its_last():
    # step counts from 0: step s of the warmup uses (s + 1) / warmup of the peak
    assert [_lr(s) for s in range(4)] == [0.5, 1.0, 1.5, 2.0]
    assert _lr(0, warmup_steps=1) == 2.0
    assert _lr(0, warmup_steps=0) == 2.0  # no warmup: the decay starts at the peak


def test_cosine_decays_from_the_peak_to_its_floor_and_holds_it():
    floor = 0.1 * 2.0
    assert _lr(4) == pytest.approx(2.0, abs=1e-15)  # decay progress 0 right after the warmup
    assert _lr(8) == pytest.approx(floor + 0.5 * (2.0 - floor), abs=1e-12)  # half way: the mean
    assert _lr(6) == pytest.approx(floor + 0.5 * (2.0 - floor) * (1 + math.cos(math.pi / 4)),
                                   abs=1e-12)
    assert _lr(10) == pytest.approx(floor + 0.5 * (2.0 - floor) * (1 + math.cos(3 * math.pi / 4)),
                                    abs=1e-12)
    assert _lr(12) == pytest.approx(floor, abs=1e-12)  # the floor, not zero
    assert _lr(40) == pytest.approx(floor, abs=1e-12)  # held after total_steps
    assert _lr(12, min_lr_ratio=0.0) == pytest.approx(0.0, abs=1e-12)
    assert _lr(12, min_lr_ratio=0.5) == pytest.approx(1.0, abs=1e-12)
    # monotone over the decay
    vals = [_lr(s) for s in range(4, 13)]
    assert all(a > b for a, b in zip(vals, vals[1:]))


def test_decay_with_no_room_after_the_warmup_does_not_divide_by_zero():
    assert _lr(5, warmup_steps=4, total_steps=4) == pytest.approx(0.2, abs=1e-12)
    assert _lr(4, warmup_steps=4, total_steps=5) == pytest.approx(2.0, abs=1e-12)
    assert _lr(5, warmup_steps=4, total_steps=5) == pytest.approx(0.2, abs=1e-12)


def test_batch_size_ramp_switches_exactly_at_each_threshold_in_any_order():
    ramp = [[200, 32], [100, 16]]
    assert batch_size_at(0, 8, ramp) == 8
    assert batch_size_at(99, 8, ramp) == 8
    assert batch_size_at(100, 8, ramp) == 16
    assert batch_size_at(199, 8, ramp) == 16
    assert batch_size_at(200, 8, ramp) == 32
    assert batch_size_at(10**9, 8, ramp) == 32
    assert batch_size_at(500, 8, []) == 8


def test_dpo_lr_factor_warmup_then_constant_or_linear_decay():
    const = DPOConfig(warmup_steps=4)
    assert [_lr_factor(s, 10, const) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert _lr_factor(0, 10, DPOConfig(warmup_steps=0)) == 1.0
    lin = DPOConfig(warmup_steps=2, lr_schedule="linear")
    assert [_lr_factor(s, 10, lin) for s in range(2)] == [0.5, 1.0]
    assert _lr_factor(2, 10, lin) == 1.0
    assert _lr_factor(6, 10, lin) == pytest.approx(0.5)
    assert _lr_factor(10, 10, lin) == 0.0
    assert _lr_factor(12, 10, lin) == 0.0  # clamped, never negative
    assert _lr_factor(2, 2, lin) == 1.0  # no room to decay: span 1, not a division by zero
