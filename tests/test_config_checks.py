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


def test_set_on_a_nested_section_keeps_the_parents_default_for_the_other_keys():
    """``--set dpo.beta=0.3`` on post-training changes beta only: the NLL weight and format-token
    exclusion that post-training chose for its DPO section stay (they are not DPOConfig's own
    class defaults)."""
    from reasonlab.posttrain.config import PosttrainConfig
    from reasonlab.training.dpo import DPOConfig

    default = PosttrainConfig().dpo
    assert default.nll_weight != DPOConfig().nll_weight  # the parent's default differs
    cfg = load_config(PosttrainConfig, None, ["dpo.beta=0.3"])
    assert cfg.dpo.beta == 0.3
    assert cfg.dpo.nll_weight == default.nll_weight
    assert cfg.dpo.exclude_format_tokens == default.exclude_format_tokens
    with pytest.raises(ConfigError, match="dpo.beta"):
        load_config(PosttrainConfig, None, ["dpo.beta=-1"])
