"""Shared bits of the benchmark scripts: machine facts and writing the result JSON."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _progress_as_lines() -> None:
    """A benchmark logging to a file gets periodic progress lines, as the CLI does, not one
    line of carriage-return redraws."""
    try:
        from reasonlab.cli_common import ProgressLines
    except ImportError:  # the package is not installed: leave stderr alone
        return
    if not sys.stderr.isatty() and not isinstance(sys.stderr, ProgressLines):
        sys.stderr = ProgressLines(sys.stderr)


_progress_as_lines()


def machine() -> dict:
    import torch

    return {"cores": os.cpu_count(), "torch": torch.__version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_avg_1m": os.getloadavg()[0]}


def write_result(name: str, payload: dict) -> Path:
    from reasonlab.runs import atomic_write_json

    path = RESULTS / f"{name}.json"
    atomic_write_json(path, {**payload, "machine": machine(),
                             "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")})
    return path


def print_table(rows: list[tuple], headers: tuple) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
