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
    def background(self) -> bool:
        """A command the README starts with a trailing ``&`` (a server the next examples use)."""
        return self.kind == "cli" and self.text.split("#")[0].rstrip().endswith("&")

    @property
    def argv(self) -> list[str]:
        """The arguments after ``reasonlab`` (comments and a trailing ``&`` dropped)."""
        words = shlex.split(self.text, comments=True)
        if words and words[-1] == "&":
            words = words[:-1]
        return words[1:]


def examples(readme: Path = README) -> list[Example]:
    """The examples in the order they stand in the README (a later one may use an earlier one's
    run folder): fenced blocks, then inline commands that no block already holds, by position."""
    text = readme.read_text()
    found: list[tuple[int, Example]] = []
    blocks = list(re.finditer(r"```(\w*)\n(.*?)```", text, re.S))
    for m in blocks:
        lang, body = m.group(1), m.group(2)
        if lang == "python":
            code = "\n".join(line[2:] if line.startswith("  ") else line for line in body.splitlines())
            found.append((m.start(), _make("python", code)))
        elif lang == "bash":
            for k, line in enumerate(body.replace("\\\n", " ").splitlines()):
                line = line.strip()
                if line.startswith("reasonlab ") or "reasonlab " in line.split("#")[0][:40]:
                    found.append((m.start() + k, _make("cli", re.sub(r"\s+", " ", line))))
    in_blocks = [e for _, e in found]
    inside = [(m.start(), m.end()) for m in blocks]
    for m in re.finditer(r"`(reasonlab [^`]+)`", text):
        if any(a <= m.start() < b for a, b in inside):
            continue
        span = re.sub(r"\s+", " ", m.group(1))
        if " -" in span and not any(span in e.text or e.text in span for e in in_blocks):
            if not any(span == e.text for _, e in found):
                found.append((m.start(), _make("cli", span)))
    return [e for _, e in sorted(found, key=lambda x: x[0])]


def _make(kind: str, text: str) -> Example:
    runnable = not any(p in text for p in PLACEHOLDERS) and not text.startswith(("OPENAI_", "vllm"))
    if kind == "cli" and not text.startswith("reasonlab "):
        runnable = False  # e.g. torchrun -m reasonlab.cli ...: checked through its command
    return Example(kind, text, runnable, any(f in text for f in FAST))
