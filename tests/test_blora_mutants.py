"""B-LoRA details the layer tests do not pin: 32 bits is full precision, and rank gates turned
off mean every rank is on whatever the gate parameters say."""

from __future__ import annotations

import torch
import torch.nn as nn

from reasonlab.peft import blora as B


def test_32_bit_grid_is_the_identity_and_16_bits_is_not():
    x = torch.randn(200, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(B.grid(x, 32), x)
    assert not torch.equal(B.grid(x, 16), x)
    assert len(torch.unique(B.grid(x, 2))) == 4


def test_rank_mask_without_rank_gates_is_all_ones():
    torch.manual_seed(0)
    layer = B.BLoRALinear(nn.Linear(6, 5), B.BLoRAConfig(r=4, rank_gates=False,
                                                         log_alpha_init=-10.0))
    layer.eval()
    assert layer.rank_mask().tolist() == [1.0, 1.0, 1.0, 1.0]
    gated = B.BLoRALinear(nn.Linear(6, 5), B.BLoRAConfig(r=4, log_alpha_init=-10.0)).eval()
    assert gated.rank_mask().tolist() == [1.0, 0.0, 0.0, 0.0]  # the gates say off


def test_evaluation_gate_is_on_exactly_when_log_alpha_is_positive():
    la = torch.tensor([-3.0, -0.2, -0.01, 0.01, 0.2, 0.35, 3.0])
    assert B.hard_concrete(la, training=False).tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_rank_two_adapter_can_drop_its_second_rank():
    torch.manual_seed(0)
    off = B.BLoRALinear(nn.Linear(6, 5), B.BLoRAConfig(r=2, log_alpha_init=-10.0)).eval()
    assert off.rank_mask().tolist() == [1.0, 0.0]
    one = B.BLoRALinear(nn.Linear(6, 5), B.BLoRAConfig(r=1, log_alpha_init=-10.0)).eval()
    assert one.rank_mask().tolist() == [1.0]
