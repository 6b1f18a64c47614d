"""Learning-rate and batch-size schedules of the Llama 3 recipe (arXiv:2407.21783 §3.4)."""

from __future__ import annotations

import math
from typing import Sequence


def warmup_cosine_lr(step: int, *, peak_lr: float, warmup_steps: int, total_steps: int,
                     min_lr_ratio: float = 0.1) -> float:
    """Linear warmup from 0 to ``peak_lr``, then cosine decay to ``min_lr_ratio * peak_lr``
    at ``total_steps`` (held there after). ``step`` counts from 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    floor = min_lr_ratio * peak_lr
    return floor + 0.5 * (peak_lr - floor) * (1.0 + math.cos(math.pi * progress))


def batch_size_at(tokens_seen: int, base_batch_size: int, ramp: Sequence[Sequence[int]]) -> int:
    """Batch size (sequences) after ``tokens_seen`` tokens: the last ``[threshold, size]`` entry of
    ``ramp`` whose threshold has been reached (Llama 3 405B: 4M → 8M → 16M tokens)."""
    size = base_batch_size
    for threshold, s in sorted(ramp, key=lambda r: r[0]):
        if tokens_seen >= threshold:
            size = s
    return size
