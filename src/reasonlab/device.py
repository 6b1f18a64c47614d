"""Device and precision selection shared by every training and inference path."""

from __future__ import annotations

import contextlib

import torch


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` force one."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{preference}' requested but CUDA is not available")
    return torch.device(preference)


def check_device(name: str, value: str) -> None:
    """Raise ConfigError (naming config key ``name``) unless ``value`` is a device this project
    accepts: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``. Checked at load, before any file
    is written; whether CUDA is present is checked when the device is picked."""
    import re

    from reasonlab.config import ConfigError

    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ConfigError(f"config key '{name}' = {value!r} is not a device; "
                          "use auto, cpu, mps, cuda or cuda:N")


PRECISIONS = ("auto", "fp32", "bf16")


def supports_bf16(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def uses_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether ``precision`` computes in bf16 on ``device``: ``auto`` on GPUs that support it,
    ``bf16`` on any CUDA or CPU device (CPUs with AMX or AVX512-BF16 run its matmuls several times
    faster than fp32; others emulate it slowly), ``fp32`` never."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        return device.type in ("cuda", "cpu")
    return precision == "auto" and supports_bf16(device)


def autocast(device: torch.device, enabled: bool = True, precision: str = "auto"):
    """bf16 autocast where :func:`uses_bf16` says so (weights and the loss stay fp32); a no-op
    context elsewhere."""
    if enabled and uses_bf16(device, precision):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch CPU threads (0 = leave as is), restoring the count after.

    On a busy machine one thread per process can be many times faster than oversubscribed cores.
    """
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
