"""Values checked when a config is loaded, before any file is written."""

from __future__ import annotations

import pytest

from reasonlab.config import ConfigError, load_config
from reasonlab.llama.trainer import TrainConfig


def test_batch_ramp_checked_against_micro_batch_at_load():
    with pytest.raises(ConfigError, match=r"batch_ramp\[1\].*12.*micro_batch_size' = 8"):
        load_config(TrainConfig, None, ["micro_batch_size=8", "batch_size=8",
                                        "batch_ramp=[[100, 16], [200, 12]]"])
    with pytest.raises(ConfigError, match=r"'batch_size' = 6.*'micro_batch_size' = 4"):
        TrainConfig(batch_size=6, micro_batch_size=4)
    ok = load_config(TrainConfig, None, ["micro_batch_size=4", "batch_size=8",
                                         "batch_ramp=[[100, 16], [200, 32]]"])
    assert ok.batch_ramp == [[100, 16], [200, 32]]
