"""Benchmark scripts log progress to files as lines, like the CLI (no carriage-return redraws)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_benchmark_progress_bars_become_lines_when_stderr_is_a_file(tmp_path):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import _common\n"
            "from tqdm import tqdm\n"
            "for _ in tqdm(range(200), mininterval=0): pass\n")
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", code, str(BENCH)], stderr=f, check=True, timeout=120)
    text = log.read_text()
    assert "200/200" in text  # the bar's final state is kept
    assert "\r" not in text
    assert len(text.splitlines()) <= 3
