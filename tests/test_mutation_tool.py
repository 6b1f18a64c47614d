"""The mutation benchmark's mutant generator (benchmarks/mutation.py): which changes it makes,
that each mutant differs from the source in exactly that change, and that its hand-kept lists
(targets, equivalent mutants) still point at real code."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def M():
    spec = importlib.util.spec_from_file_location("mutation_bench", ROOT / "benchmarks" / "mutation.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


SOURCE = '''"""Module docstring."""
import logging

log = logging.getLogger(__name__)
LIMIT = 3


def f(a: int, b: int = 2) -> int:
    """Docstring."""
    log.info("a + 1 = %d", a + 1)
    if a < b and not a == 0:
        return a * b - 1
    return -a


def g(x):
    return x in (1, 2) or x is None


class C:
    def h(self, n: int = 0):
        n += 1
        return n // 2 > 0 and True
'''


def test_operator_classes_in_walk_order(M):
    got = [(m.line, m.function, m.change) for m in M.list_mutants(SOURCE, [])]
    assert got == [
        (5, "<module>", "`3` -> `4`"),
        (8, "f", "`2` -> `3`"),
        (11, "f", "`and` -> `or`"),
        (11, "f", "`<` -> `<=`"),
        (11, "f", "`not x` -> `bool(x)`"),
        (11, "f", "`==` -> `!=`"),
        (11, "f", "`0` -> `1`"),
        (12, "f", "`return ...` -> `return None`"),
        (12, "f", "`-` -> `+`"),
        (12, "f", "`*` -> `/`"),
        (12, "f", "`1` -> `2`"),
        (13, "f", "`return ...` -> `return None`"),
        (13, "f", "`-x` -> `+x`"),
        (17, "g", "`return ...` -> `return None`"),
        (17, "g", "`or` -> `and`"),
        (17, "g", "`in` -> `not in`"),
        (17, "g", "`1` -> `2`"),
        (17, "g", "`2` -> `3`"),
        (17, "g", "`is` -> `is not`"),
        (21, "C.h", "`0` -> `1`"),
        (22, "C.h", "`+=` -> `-=`"),
        (22, "C.h", "`1` -> `2`"),
        (23, "C.h", "`return ...` -> `return None`"),
        (23, "C.h", "`and` -> `or`"),
        (23, "C.h", "`>` -> `>=`"),
        (23, "C.h", "`//` -> `/`"),
        (23, "C.h", "`2` -> `3`"),
        (23, "C.h", "`0` -> `1`"),
        (23, "C.h", "`True` -> `False`"),
    ]  # nothing from docstrings, annotations or the logging call on line 10


def test_function_filter_keeps_only_the_named_scopes(M):
    assert {m.function for m in M.list_mutants(SOURCE, ["g", "C.h"])} == {"g", "C.h"}
    assert {m.function for m in M.list_mutants(SOURCE, ["C"])} == {"C.h"}
    assert M.list_mutants(SOURCE, ["nothing"]) == []


def test_each_mutant_changes_exactly_its_own_node(M):
    base = ast.dump(ast.parse(SOURCE))
    ns: dict = {}
    seen = set()
    for m in M.list_mutants(SOURCE, []):
        text = M.mutated_source(SOURCE, [], m.index)
        assert ast.dump(ast.parse(text)) != base
        seen.add(text)
    assert len(seen) == len(M.list_mutants(SOURCE, []))  # all different programs
    # behaviour: `<` -> `<=` on line 11 changes f(2, 2) from -2 to 3
    i = next(m.index for m in M.list_mutants(SOURCE, []) if m.change == "`<` -> `<=`")
    exec(compile(M.mutated_source(SOURCE, [], i), "<mutant>", "exec"), ns)
    assert ns["f"](2, 2) == 3
    exec(compile(SOURCE, "<source>", "exec"), ns)
    assert ns["f"](2, 2) == -2


def test_targets_and_equivalents_point_at_real_code(M):
    for t in M.TARGETS:
        assert t.path.is_file(), t.module
        assert all((ROOT / f).is_file() for f in t.tests), t.tests
        mutants = M.list_mutants(t.path.read_text(), t.functions)
        assert mutants, f"{t.module}: no mutants in {t.functions}"
        if t.functions:  # every named function exists (a rename must update the target)
            scopes = {m.function for m in mutants}
            for f in t.functions:
                assert any(s == f or s.startswith(f + ".") for s in scopes), (t.module, f)
    for (file, line, change), reason in M.EQUIVALENT.items():
        assert reason
        text = (ROOT / file).read_text()
        assert any(m.source_line == line and m.change == change
                   for m in M.list_mutants(text, [])), (file, line, change)


def test_score_and_interval(M):
    r = {"killed": 8, "timeout": 1, "survived": 1, "not_covered": 0, "equivalent": 2,
         "not_run": 0, "sampled": 12, "mutants_in_scope": 40, "score": 0.9,
         "interval95": M.wilson(9, 10), "survivors": [{"file": "x.py", "line": 1}]}
    out = M.summarize({"m": r})
    assert out["overall_score"] == 0.9 and out["survivors"] == [{"file": "x.py", "line": 1}]
    lo, hi = M.wilson(9, 10)
    assert 0.55 < lo < 0.6 and 0.98 < hi <= 1.0
    assert M.wilson(0, 0) == [0.0, 1.0]
