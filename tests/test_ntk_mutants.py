"""The NTK kernel's pure statistics pinned entry by entry: structure weights, refusals, the
default bootstrap seed, small effect lists and a one-column kernel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reasonlab.evals import ntk


def test_structure_weights_entry_by_entry():
    conds = [("add", 0), ("add", 1), ("sub", 0), ("sub", 1)]
    w = ntk.structure_weights(conds)
    q = 0.25
    assert w.tolist() == [[0, q, -q, 0], [q, 0, 0, -q], [-q, 0, 0, q], [0, -q, q, 0]]
    # three wordings of two skills: 12 same-skill pairs, 6 same-wording pairs
    conds = [(s, k) for s in ("a", "b") for k in range(3)]
    w = ntk.structure_weights(conds)
    assert w[0, 1] == pytest.approx(1 / 12) and w[0, 3] == pytest.approx(-1 / 6)
    assert w[0, 0] == 0 and w[0, 4] == 0 and w.sum() == pytest.approx(0.0)


@pytest.mark.parametrize("conds", [[("add", 0), ("add", 1)], [("add", 0), ("sub", 0)]])
def test_structure_weights_need_two_skills_and_two_wordings(conds):
    with pytest.raises(ValueError, match="two skills and two wordings"):
        ntk.structure_weights(conds)


def test_contrast_default_seed_is_zero():
    d = np.random.default_rng(3).normal(size=(2, 2, 6))
    w = ntk.diag_weights(2)
    v0, reps0 = ntk.contrast(d, w, n_boot=50)
    v, reps = ntk.contrast(d, w, n_boot=50, seed=0)
    assert v0 == v and np.array_equal(reps0, reps)
    assert not np.array_equal(reps0, ntk.contrast(d, w, n_boot=50, seed=1)[1])


def test_samples_needed_on_one_effect_and_a_zero_sign():
    assert ntk.samples_needed([0.5], truth_sign=1) == 1
    assert ntk.samples_needed([-0.5], truth_sign=-1) == 1
    assert ntk.samples_needed([], truth_sign=1) is None
    assert ntk.samples_needed([1.0, 2.0], truth_sign=0) is None
    # P(mean > 0) is 2/3, 8/9, 26/27 for n = 1, 2, 3: only n = len(x) reaches 0.93
    x = [1.0, 1.0, -0.1]
    assert ntk.samples_needed(x, truth_sign=1, confidence=0.93, n_boot=4000) == 3
    assert ntk.samples_needed(x, truth_sign=1, confidence=0.93, grid=[1, 2]) is None


def test_kernel_from_measures_with_one_column_and_a_missing_measure():
    base = {"c0": {"acc": [1.0, 0.0, 1.0]}}
    k = ntk.kernel_from_measures(base, [{"c0": {"acc": [1.0, 1.0, 0.0]}}], "acc")
    assert k.tolist() == [[[0.0, 1.0, -1.0]]]
    k = ntk.kernel_from_measures(base, [{"c0": {}}], "acc")
    assert k.shape == (1, 1, 3) and all(math.isnan(v) for v in k[0, 0])


def test_contrast_without_bootstrap_returns_one_replicate():
    d = np.arange(8.0).reshape(2, 2, 2)
    v, reps = ntk.contrast(d, ntk.diag_weights(2), n_boot=0)
    # means [[0.5, 2.5], [4.5, 6.5]]: diagonal mean 3.5, off-diagonal mean 3.5
    assert v == pytest.approx(0.0) and reps.tolist() == [v]


def test_skill_diagonal_weights_pool_wordings():
    conds = [("add", 0), ("add", 1), ("sub", 0)]
    w = ntk._skill_diag_weights(conds)
    s, o = 1 / 5, -1 / 4  # 5 same-skill cells (diagonal included), 4 other-skill cells
    assert np.allclose(w, [[s, s, o], [s, s, o], [o, o, s]])
    assert np.allclose(ntk._skill_diag_weights([("a", 0), ("b", 0), ("c", 0)]),
                       ntk.diag_weights(3))
