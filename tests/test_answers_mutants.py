"""Symbolic checks run in this process when no time limit is given."""

from reasonlab.data.answers import symbolic


def test_symbolic_without_a_time_limit_runs_here():
    assert symbolic("verify", "\\frac{1}{2}", "0.5", timeout=None) is True
    assert symbolic("verify", "3", "4", timeout=None) is False
    assert symbolic("verify", "\\frac{1}{2}", "0.5", timeout=0) is True
