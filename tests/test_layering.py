"""The layering rule: the core imports no method package.

The core (config, runs, device, plots, lm, llama, data, training) is what every method builds
on; a method (solver, posttrain, optim, evals, reasoning, attacks, peft, skills, models,
templates, demo) imports the core and other methods through their public functions. Every import
statement of every core module is read with ``ast`` (imports inside functions included, relative
imports resolved), and an import of a method package fails the test naming file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "reasonlab"
CORE = ("config", "runs", "device", "plots", "lm", "llama", "data", "training")
METHODS = ("solver", "posttrain", "optim", "evals", "reasoning", "attacks", "peft", "skills",
           "models", "templates", "demo", "pipeline")


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported(node: ast.AST, path: Path) -> list[str]:
    """Absolute dotted names an import statement brings in (``from a import b`` gives a.b)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            pkg = _module_name(path)
            if path.name != "__init__.py":
                pkg = pkg[:-1]
            base = pkg[: len(pkg) - (node.level - 1)] + ([node.module] if node.module else [])
            module = ".".join(base)
        else:
            module = node.module or ""
        return [f"{module}.{a.name}" for a in node.names]
    return []


def method_imports(path: Path) -> list[str]:
    """``file:line imports reasonlab.X`` for every import of a method package in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        for name in _imported(node, path):
            parts = name.split(".")
            if len(parts) > 1 and parts[0] == "reasonlab" and parts[1] in METHODS:
                rel = path.relative_to(SRC.parent)
                bad.append(f"{rel}:{node.lineno} imports {'.'.join(parts[:2])}")
    return bad


def core_modules() -> list[Path]:
    files = []
    for name in CORE:
        if (PACKAGE / f"{name}.py").exists():
            files.append(PACKAGE / f"{name}.py")
        elif (PACKAGE / name).is_dir():
            files += sorted((PACKAGE / name).rglob("*.py"))
    return files


def test_the_core_imports_no_method_package():
    files = core_modules()
    assert len(files) >= 20  # every core package was found (the walk reads real files)
    bad = [b for f in files for b in method_imports(f)]
    assert not bad, "the core must not import a method package:\n" + "\n".join(bad)


@pytest.mark.parametrize("source, line", [
    ("import os\nfrom reasonlab.solver import run_solver\n", 2),
    ("def f():\n    import reasonlab.posttrain.config as c\n", 2),
    ("from reasonlab import evals\n", 1),
    ("from ..optim import l3rs\n", 1),
])
def test_a_method_import_is_named_with_its_line(tmp_path, source, line):
    pkg = tmp_path / "src" / "reasonlab" / "llama"
    pkg.mkdir(parents=True)
    f = pkg / "bad.py"
    f.write_text(source)
    global SRC
    saved, SRC = SRC, tmp_path / "src"
    try:
        bad = method_imports(f)
    finally:
        SRC = saved
    assert len(bad) == 1 and bad[0].startswith(f"src/reasonlab/llama/bad.py:{line} imports reasonlab.")


def test_core_and_sibling_imports_pass(tmp_path):
    pkg = tmp_path / "src" / "reasonlab" / "lm"
    pkg.mkdir(parents=True)
    f = pkg / "ok.py"
    f.write_text("from reasonlab.llama.tokenizer import load_tokenizer\nfrom . import base\n"
                 "from .chat_format import EOT\nimport reasonlab.runs\nfrom reasonlab import data\n")
    global SRC
    saved, SRC = SRC, tmp_path / "src"
    try:
        assert method_imports(f) == []
    finally:
        SRC = saved
