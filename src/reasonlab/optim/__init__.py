"""reasonlab.optim: the specialized learned optimizer (L3RS) and its meta-training.

``from reasonlab.optim import L3RS, MetaModel`` works; the submodules load on first use so that
importing the CLI stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"L3RS": "l3rs", "L3RSConfig": "l3rs", "MetaModel": "l3rs",
            "Environment": "envs", "EnvSpec": "envs", "DigitsEnv": "envs",
            "MetaTrainConfig": "es", "meta_train": "es", "CompareConfig": "compare",
            "run_compare": "compare"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"reasonlab.optim.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'reasonlab.optim' has no attribute {name!r}")
