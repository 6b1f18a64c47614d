"""The batch-size ramp is ordered by threshold, not by size: a ramp that lowers the batch size
is followed as written."""

from reasonlab.llama.schedules import batch_size_at


def test_ramp_is_ordered_by_threshold_even_when_sizes_fall():
    ramp = [[200, 16], [100, 32]]
    assert batch_size_at(50, 8, ramp) == 8
    assert batch_size_at(150, 8, ramp) == 32
    assert batch_size_at(300, 8, ramp) == 16
