"""The runnable examples of README.md: every ``reasonlab ...`` command (fenced bash blocks and
inline code with options) and every Python block, each checked or run by tests/test_readme.py
and benchmarks/cli_faults.py so the manual cannot drift from the code."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
# Texts that stand for something the reader fills in, or a service outside the project.
PLACEHOLDERS = ("…", "RUN...", "GPU-HOST", " MODEL", "path/to/", "$KEY", "loss_fn(")
# Examples that run in seconds; the others train or serve for minutes and run under -m slow.
FAST = ("reasonlab presets", "reasonlab data show", "reasonlab data skillmath -o runs/sm",
        "reasonlab show-config", "DPOConfig(", "build_guard_prompt", "reasonlab --version",
        "reasonlab models list", "check_answer(", "from reasonlab.templates import render",
        "import contrast, diag_weights", "sample_creators, condition_prompt", "blora as B")


@dataclass
class Example:
    kind: str          # "cli" or "python"
    text: str          # the command line (continuations joined) or the code
    runnable: bool
    fast: bool

    @property
    def argv(self) -> list[str]:
        """The arguments after ``reasonlab`` (comments and a trailing ``&`` dropped)."""
        words = shlex.split(self.text, comments=True)
        if words and words[-1] == "&":
            words = words[:-1]
        return words[1:]


def examples(readme: Path = README) -> list[Example]:
    text = readme.read_text()
    out: list[Example] = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if lang == "python":
            code = "\n".join(line[2:] if line.startswith("  ") else line for line in body.splitlines())
            out.append(_make("python", code))
        elif lang == "bash":
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip()
                if line.startswith("reasonlab ") or "reasonlab " in line.split("#")[0][:40]:
                    out.append(_make("cli", re.sub(r"\s+", " ", line)))
    for span in re.findall(r"`(reasonlab [^`]+)`", text):
        span = re.sub(r"\s+", " ", span)
        if " -" in span and not any(span in e.text or e.text in span for e in out):
            out.append(_make("cli", span))
    return out


def _make(kind: str, text: str) -> Example:
    runnable = not any(p in text for p in PLACEHOLDERS) and not text.startswith(("OPENAI_", "vllm"))
    if kind == "cli" and not text.startswith("reasonlab "):
        runnable = False  # e.g. torchrun -m reasonlab.cli ...: checked through its command
    return Example(kind, text, runnable, any(f in text for f in FAST))
