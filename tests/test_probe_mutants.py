"""Probe sampling's defaults (probe set B/16, filtered set (1 - alpha) B / 8), pinned on
synthetic losses with no model."""

from __future__ import annotations

import torch

from reasonlab.attacks.probe import probe_select


def test_default_probe_and_filtered_sizes():
    b = 64
    draft = torch.arange(b, dtype=torch.float64)
    calls = []

    def anti(idx):  # the target ranks the candidates in the reverse order: alpha = 0
        calls.append(idx.tolist())
        return (b - idx).double()

    sel = probe_select(draft, anti, generator=torch.Generator().manual_seed(0))
    assert len(sel.probe) == 4  # 64 // 16
    assert sel.alpha == 0.0
    assert sel.filtered == list(range(8))  # (1 - 0) * 64 / 8 lowest draft losses
    assert len(calls[0]) == 4 and sel.n_target == len(set(sel.probe) | set(range(8)))

    sel = probe_select(draft, lambda idx: idx.double(), generator=torch.Generator().manual_seed(0))
    assert sel.alpha == 1.0 and sel.filtered == [0]  # full agreement: one candidate
    sel = probe_select(torch.arange(160, dtype=torch.float64), lambda idx: (160 - idx).double(),
                       generator=torch.Generator().manual_seed(0))
    assert len(sel.probe) == 10 and len(sel.filtered) == 20


def test_fewer_candidates_than_the_sampling_factor_probe_one():
    sel = probe_select(torch.arange(20, dtype=torch.float64), lambda idx: idx.double(),
                       generator=torch.Generator().manual_seed(0))
    assert len(sel.probe) == 1 and sel.alpha == 0.0  # one probe: no correlation
    assert len(sel.filtered) == 2  # int(20 / 8)
