"""E0 and its bound, value by value: Hoeffding's slack and its refusals, the range check of the
values, the per-step KL, the Wilson interval at its edges and which evaluators get an E0."""

from __future__ import annotations

import math

import pytest

from reasonlab.evals import creativity as C


def test_concentration_bound_values_and_defaults():
    assert C.concentration_bound(1) == pytest.approx(math.sqrt(math.log(20) / 2), rel=1e-12)
    assert C.concentration_bound(2, eta=0.5, value_range=3.0) == pytest.approx(
        3.0 * math.sqrt(math.log(2) / 4), rel=1e-12)
    assert C.concentration_bound(8, eta=0.05) == C.concentration_bound(8)


@pytest.mark.parametrize("kw, match", [(dict(n=0), "n must be"), (dict(n=-1), "n must be"),
                                       (dict(n=3, eta=0.0), "eta"), (dict(n=3, eta=1.0), "eta"),
                                       (dict(n=3, eta=-0.1), "eta"),
                                       (dict(n=3, value_range=0.0), "value_range"),
                                       (dict(n=3, value_range=-1.0), "value_range")])
def test_concentration_bound_refusals(kw, match):
    with pytest.raises(ValueError, match=match):
        C.concentration_bound(**kw)


def test_estimate_e0_mean_slack_and_upper():
    e = C.estimate_e0([0.2, 0.4, 0.9])
    assert e.e0 == pytest.approx(0.5, rel=1e-12) and e.n == 3
    assert e.slack == pytest.approx(math.sqrt(math.log(20) / 6), rel=1e-12)
    assert e.upper == pytest.approx(0.5 + e.slack, rel=1e-12)
    assert e.eta == 0.05 and e.value_range == 1.0 and e.in_range is True
    assert e.values == [0.2, 0.4, 0.9]
    assert e.to_dict()["e0"] == e.e0 and e.to_dict()["n"] == 3
    e = C.estimate_e0([1.0, 3.0], eta=0.1, value_range=4.0)
    assert e.e0 == 2.0 and e.slack == pytest.approx(4.0 * math.sqrt(math.log(10) / 4), rel=1e-12)


def test_estimate_e0_range_check_is_inclusive_at_both_ends():
    assert C.estimate_e0([0.0, 1.0]).in_range is True
    assert C.estimate_e0([-0.01, 0.5]).in_range is False
    assert C.estimate_e0([0.5, 1.01]).in_range is False
    assert C.estimate_e0([2.0, 3.0], lo=2.0).in_range is True
    assert C.estimate_e0([2.0, 3.5], lo=2.0).in_range is False
    assert C.estimate_e0([1.9, 2.5], lo=2.0).in_range is False
    # lo=None: only the upper end is checked
    assert C.estimate_e0([-0.3, 1.0], lo=None).in_range is True
    assert C.estimate_e0([-0.3, 1.2], lo=None).in_range is False


def test_estimate_e0_refusals():
    with pytest.raises(ValueError, match="no values"):
        C.estimate_e0([])
    with pytest.raises(ValueError, match="NaN"):
        C.estimate_e0([0.1, math.nan])


def test_kl_per_char_exact_value_and_refusals():
    # creator log-probs minus model log-probs: (-1 - -3) and (-2 - -2.5): mean 1.25;
    # steps: (2 + 1, 4 + 1): mean 4
    assert C.kl_per_char([-3.0, -2.5], [-1.0, -2.0], [2, 4]) == pytest.approx(1.25 / 4)
    assert C.kl_per_char([-1.0], [-1.0], [0]) == 0.0
    for args in (([-1.0], [-1.0, -2.0], [1, 1]), ([-1.0, -2.0], [-1.0, -2.0], [1]),
                 ([], [], [])):
        with pytest.raises(ValueError, match="equally many"):
            C.kl_per_char(*args)


def test_wilson_interval_edges_and_z():
    lo, hi = C.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = C.wilson_interval(10, 10)
    assert hi == pytest.approx(1.0, abs=1e-12) and lo == pytest.approx(0.7225, abs=1e-4)
    lo, hi = C.wilson_interval(5, 10, z=1.0)
    assert (lo, hi) == pytest.approx((0.5 - math.sqrt(0.025 + 1 / 400) / 1.1,
                                      0.5 + math.sqrt(0.025 + 1 / 400) / 1.1), abs=1e-12)
    z = 1.959964  # one trial is enough
    lo, hi = C.wilson_interval(1, 1)
    assert lo == pytest.approx(1 / (1 + z * z), rel=1e-9) and hi == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="n must be > 0"):
        C.wilson_interval(0, 0)


def test_e0_by_evaluator_ranges_and_missing_scores():
    scores = [C.CreatorScore("a", kl=-0.1, discriminator=0.6, mauve=0.2),
              C.CreatorScore("b", kl=0.5, discriminator=0.8, mauve=None)]
    out = C.e0_by_evaluator(scores, eta=0.1, kl_range=2.0)
    assert sorted(out) == ["discriminator", "kl"]  # one creator lacks MAUVE: no E0 for it
    kl = out["kl"]
    assert kl.e0 == pytest.approx(0.2) and kl.value_range == 2.0 and kl.eta == 0.1
    assert kl.in_range is True  # KL may dip below 0 by noise: only its upper end is checked
    d = out["discriminator"]
    assert d.e0 == pytest.approx(0.7) and d.value_range == 1.0 and d.in_range is True
    assert d.slack == pytest.approx(math.sqrt(math.log(10) / 4))
    out = C.e0_by_evaluator([C.CreatorScore("a", kl=1.5, mauve=0.3)])
    assert sorted(out) == ["kl", "mauve"] and out["kl"].in_range is False
    assert out["mauve"].e0 == 0.3 and out["mauve"].eta == 0.05
    assert C.e0_by_evaluator([]) == {}
