"""Mutation score of the core: do the tests catch small mistakes put into the code?

For each target module (or the named functions of its pure core) the script parses the source
with :mod:`ast`, generates one mutant per change of a standard operator class

* comparison flips (``<`` ↔ ``<=``, ``>`` ↔ ``>=``, ``==`` ↔ ``!=``, ``in`` ↔ ``not in``,
  ``is`` ↔ ``is not``),
* arithmetic swaps (``+`` ↔ ``-``, ``*`` ↔ ``/``, ``//`` → ``/``, ``%`` → ``//``, ``**`` → ``*``),
  also in augmented assignments,
* integer constants off by one (``n`` → ``n + 1``) and ``True`` ↔ ``False``,
* boolean ``and`` ↔ ``or``, negation removed (``not x`` → ``bool(x)``, ``-x`` → ``+x``),
* return values replaced by ``None``,

and runs the test files that exercise the module against each mutant, one at a time. A mutant
lives in a copy of the package (an overlay directory first on ``sys.path`` and ``PYTHONPATH``):
the real source is never edited. Each mutant runs in a fresh process forked from a parent that
has imported the heavy third-party libraries (torch, transformers) but nothing of ``reasonlab``,
under ``pytest -x -q -p no:cacheprovider`` with a per-mutant timeout. A first unmutated run
records which lines of the module the tests execute (``sys.settrace``); a mutant on a line they
never run survives without being run.

Not mutated: type annotations, docstrings, arguments of logging calls (messages nobody reads
back). Mutants known to be equivalent (the program cannot behave differently) are kept in
:data:`EQUIVALENT` with a one-line reason each and are not counted in the score.

Score of a module = (killed + timed out) / (killed + timed out + survived), over a fixed-seed
sample of at most ``--max-mutants`` mutants per module, with a Wilson 95% interval for the
sampling. Each module gets a fresh snapshot of the package (the source its tests see is the
current one); a module whose unmutated tests fail is reported and skipped, keeping its old entry.
Writes ``benchmarks/results/mutation.json`` (``modules``, ``overall_score``,
``survivors``) and prints a table. A run of some modules (``--modules``) updates their entries
in an existing result file and keeps the others.

    nice -n 10 python benchmarks/mutation.py --max-mutants 40 --budget-minutes 20
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
RESULT = ROOT / "benchmarks" / "results" / "mutation.json"


@dataclass
class Target:
    """A module under test: which of its functions (qualified names; empty: the whole module)
    and which test files exercise it."""

    module: str
    tests: list[str]
    functions: list[str] = field(default_factory=list)
    what: str = ""

    @property
    def path(self) -> Path:
        return SRC / (self.module.replace(".", "/") + ".py")

    @property
    def rel(self) -> str:
        return str(self.path.relative_to(ROOT))


TARGETS = [
    Target("reasonlab.data.answers", ["tests/test_answers_mutants.py", "tests/test_answers.py"], what="answer grading"),
    Target("reasonlab.llama.packing", ["tests/test_packing_mutants.py", "tests/test_packing.py"],
           what="packing, document masks"),
    Target("reasonlab.llama.schedules", ["tests/test_schedules_mutants.py", "tests/test_schedules.py"], what="LR and batch schedules"),
    Target("reasonlab.llama.trainer", ["tests/test_trainer_mutants.py", "tests/test_trainer_core.py"],
           ["stream_indices", "token_losses", "batch_inputs", "evaluate", "Trainer.latest_checkpoint",
            "Trainer.save_checkpoint", "Trainer.load_checkpoint", "Trainer._micro_size",
            "Trainer.train_step", "Trainer._fit"], "trainer accumulation and resume"),
    Target("reasonlab.training.dpo", ["tests/test_dpo_mutants.py", "tests/test_schedules.py",
                                     "tests/test_dpo.py"],
           ["_as_epsilon", "dpo_loss", "nll_loss", "DPOOutput", "preference_loss", "truncate_pair",
            "truncate_pairs", "collate_pairs", "sequence_logps", "pair_logps", "_lr_factor"],
           "DPO losses, log-probs, batches"),
    Target("reasonlab.optim.l3rs", ["tests/test_l3rs_mutants.py", "tests/test_l3rs_directions.py", "tests/test_optim_l3rs.py"],
           ["time_basis", "MetaModel.coefficients", "MetaModel.fixed", "L3RS._directions",
            "L3RS.step", "L3RS._state_features", "_logratio"], "L3RS directions and mixing"),
    Target("reasonlab.data.skillmath", ["tests/test_skillmath_mutants.py", "tests/test_skillmath.py"], what="SkillMath generator"),
    Target("reasonlab.models.cache", ["tests/test_model_cache_mutants.py", "tests/test_model_cache.py"], what="the model cache"),
    Target("reasonlab.runs", ["tests/test_runs_mutants.py", "tests/test_config_and_runs.py",
                              "tests/test_run_semantics.py"],
           what="run directories"),
    Target("reasonlab.reasoning.mcts", ["tests/test_mcts.py"],
           ["step_prior", "puct_score", "select_child", "node_value", "init_child", "backup",
            "best_child", "epsilon_from_visits", "extract_pairs"], "MCTS backup and PUCT"),
    Target("reasonlab.attacks.probe", ["tests/test_probe_mutants.py", "tests/test_gcg.py"],
           ["agreement", "filtered_size", "probe_select"], "probe agreement and filtering"),
    Target("reasonlab.peft.blora", ["tests/test_blora_mutants.py", "tests/test_blora.py"],
           ["hard_concrete", "prob_on", "nested", "_ste_round", "grid", "fake_quantize", "bit_width",
            "BLoRALinear.rank_mask", "BLoRALinear.quant_gates", "BLoRALinear.effective_rank",
            "BLoRALinear.bit_widths"], "B-LoRA gates and quantizer"),
    Target("reasonlab.evals.ntk", ["tests/test_ntk_mutants.py", "tests/test_ntk.py"],
           ["cell_stats", "contrast", "interval", "diag_weights", "structure_weights",
            "samples_needed", "kernel_from_measures", "learning_effects", "_skill_diag_weights"],
           "the NTK kernel"),
    Target("reasonlab.evals.creativity", ["tests/test_creativity_mutants.py", "tests/test_creativity.py"],
           ["concentration_bound", "estimate_e0", "E0Estimate", "kl_per_char", "wilson_interval",
            "e0_by_evaluator"], "E0 and its bound"),
]

# Equivalent mutants: (file, the source line stripped, the change) -> why no test can tell.
EQUIVALENT: dict[tuple[str, str, str], str] = {
    ("src/reasonlab/llama/schedules.py", "if warmup_steps > 0 and step < warmup_steps:",
     "`>` -> `>=`"): "with warmup_steps == 0 the second test, step < 0, is false for every step",
    ("src/reasonlab/evals/ntk.py",
     "means = x[rng.integers(0, len(x), size=(n_boot, n))].mean(-1)", "`-x` -> `+x`"):
        "the resampled array is 2-D, so axis +1 is axis -1",
    ("src/reasonlab/data/answers.py", "if not timeout or timeout <= 0:", "`<=` -> `<`"):
        "a timeout of 0 is already caught by `not timeout`",
    ("src/reasonlab/optim/l3rs.py", 'glob["loss_ema"], glob["loss0"] = [lv] * 3, lv', "`3` -> `4`"):
        "only entries 0-2 are read, and the next update zips the list with the three decays",
    ("src/reasonlab/optim/l3rs.py", "f[fresh, :4] = gns[fresh, None]", "`4` -> `5`"):
        "column 4 is overwritten with the weight norm on the next line",
}


# -- mutants ----------------------------------------------------------------------------------
_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
        ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
        ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult}
_SYM = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
        ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+",
        ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
        ast.And: "and", ast.Or: "or"}
_LOGGERS = {"log", "logger", "logging"}


@dataclass
class Mutant:
    index: int  # position in the module's mutation-point order (stable for one source)
    line: int
    change: str
    function: str
    source_line: str = ""


def _points(tree: ast.AST, functions: list[str]) -> list[tuple[ast.AST, str, str, str]]:
    """Every (node, variant, qualified scope, change) mutation point, in a fixed walk order."""
    out: list[tuple[ast.AST, str, str, str]] = []

    def in_scope(scope: str) -> bool:
        return not functions or any(scope == f or scope.startswith(f + ".") for f in functions)

    def visit(node: ast.AST, scope: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope = f"{scope}.{node.name}" if scope else node.name
            for d in node.decorator_list:
                visit(d, scope)
            if isinstance(node, ast.ClassDef):
                for b in node.bases:
                    visit(b, scope)
            else:
                for a in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                    visit(a, scope)
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                body = body[1:]  # the docstring
            for s in body:
                visit(s, scope)
            return
        if isinstance(node, ast.AnnAssign):
            if node.value is not None:
                visit(node.value, scope)
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id in _LOGGERS:
            return
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            return
        if in_scope(scope):
            if isinstance(node, ast.Compare):
                for i, op in enumerate(node.ops):
                    new = _CMP.get(type(op))
                    if new:
                        out.append((node, f"cmp:{i}", scope,
                                    f"`{_SYM[type(op)]}` -> `{_SYM[new]}`"))
            elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BIN:
                new = _BIN[type(node.op)]
                aug = "=" if isinstance(node, ast.AugAssign) else ""
                out.append((node, "bin", scope,
                            f"`{_SYM[type(node.op)]}{aug}` -> `{_SYM[new]}{aug}`"))
            elif isinstance(node, ast.BoolOp):
                new = ast.Or if isinstance(node.op, ast.And) else ast.And
                out.append((node, "bool", scope, f"`{_SYM[type(node.op)]}` -> `{_SYM[new]}`"))
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
                out.append((node, "unary", scope, "`not x` -> `bool(x)`"
                            if isinstance(node.op, ast.Not) else "`-x` -> `+x`"))
            elif isinstance(node, ast.Constant) and type(node.value) is bool:
                out.append((node, "const", scope, f"`{node.value}` -> `{not node.value}`"))
            elif isinstance(node, ast.Constant) and type(node.value) is int:
                out.append((node, "const", scope, f"`{node.value}` -> `{node.value + 1}`"))
            elif isinstance(node, ast.Return) and node.value is not None and not (
                    isinstance(node.value, ast.Constant) and node.value.value is None):
                out.append((node, "return", scope, "`return ...` -> `return None`"))
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # the module docstring
        visit(stmt, "")
    return out


def _apply(node: ast.AST, variant: str) -> None:
    if variant.startswith("cmp:"):
        i = int(variant[4:])
        node.ops[i] = _CMP[type(node.ops[i])]()
    elif variant == "bin":
        node.op = _BIN[type(node.op)]()
    elif variant == "bool":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif variant == "unary":
        if isinstance(node.op, ast.Not):
            node.operand = ast.UnaryOp(op=ast.Not(), operand=node.operand)
        else:
            node.op = ast.UAdd()
    elif variant == "const":
        node.value = (not node.value) if type(node.value) is bool else node.value + 1
    elif variant == "return":
        node.value = ast.Constant(value=None)
    ast.fix_missing_locations(node)


def list_mutants(source: str, functions: list[str]) -> list[Mutant]:
    """The module's mutants in order, each with its line, change and enclosing function."""
    lines = source.splitlines()
    return [Mutant(i, node.lineno, change, scope or "<module>", lines[node.lineno - 1].strip())
            for i, (node, _, scope, change) in enumerate(_points(ast.parse(source), functions))]


def mutated_source(source: str, functions: list[str], index: int) -> str:
    tree = ast.parse(source)
    node, variant, _, _ = _points(tree, functions)[index]
    _apply(node, variant)
    return ast.unparse(tree)


def is_equivalent(rel: str, m: Mutant) -> str | None:
    return EQUIVALENT.get((rel, m.source_line, m.change))


# -- running the tests ------------------------------------------------------------------------
def _preload() -> None:
    """Import the heavy third-party libraries once, in the parent, so each forked mutant starts
    warm; never ``reasonlab`` itself (each mutant must import its own copy)."""
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    try:
        import safetensors.torch  # noqa: F401
        import tokenizers  # noqa: F401
        from transformers import LlamaForCausalLM  # noqa: F401
    except ImportError:  # pragma: no cover - optional speed-up only
        pass
    assert not any(m == "reasonlab" or m.startswith("reasonlab.") for m in sys.modules), \
        "the parent process must not import reasonlab"


def _third_party(name: str) -> bool:
    top = name.split(".")[0]
    mod = sys.modules.get(name)
    f = str(getattr(mod, "__file__", None) or "")
    return (top not in ("reasonlab", "__main__", "conftest") and not top.startswith("test")
            and "site-packages" in f and str(ROOT / "tests") not in f)


def preload_more(names: list[str]) -> int:
    """Import in the parent the third-party modules a test run imported (best effort), so the
    forked mutants do not import them again. Returns how many are loaded now."""
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in names:
            if n not in sys.modules:
                try:
                    importlib.import_module(n)
                except Exception:  # noqa: BLE001 - optional speed-up only
                    pass
    assert not any(m == "reasonlab" or m.startswith("reasonlab.") for m in sys.modules), \
        "the parent process must not import reasonlab"
    return len(sys.modules)


def run_tests(overlay_src: Path, tests: list[str], timeout: float, log_path: Path,
              trace_file: Path | None = None, threads: int = 1) -> tuple[str, float, float]:
    """Run ``tests`` in a forked child that imports ``reasonlab`` from ``overlay_src``.

    Returns (status, seconds, cpu seconds): "passed", "failed" (the tests caught it), "timeout" or "error"
    (pytest could not run: usage error, no tests collected). With ``trace_file`` the child
    writes the sorted line numbers it executed in ``trace_file``'s target (its name is the
    target path) as JSON."""
    t0 = time.time()
    pid = os.fork()
    if pid == 0:  # the child
        code = 3
        try:
            os.setpgid(0, 0)
            fd = os.open(str(log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.path.insert(0, str(overlay_src))
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [str(overlay_src)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
            os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
            sys.dont_write_bytecode = True
            os.chdir(ROOT)
            import torch

            torch.set_num_threads(max(1, threads))
            import pytest

            lines: set[int] = set()
            if trace_file is not None:
                import threading

                target = _TRACE_TARGET[0]

                def local(frame, event, arg):
                    if event == "line":
                        lines.add(frame.f_lineno)
                    return local

                def tracer(frame, event, arg):
                    return local if frame.f_code.co_filename == target else None

                sys.settrace(tracer)
                threading.settrace(tracer)
            code = int(pytest.main([*tests, "-x", "-q", "-p", "no:cacheprovider"]))
            if trace_file is not None:
                sys.settrace(None)
                trace_file.write_text(json.dumps(sorted(lines)))
                third = sorted(m for m in list(sys.modules) if _third_party(m))
                trace_file.with_suffix(".modules.json").write_text(json.dumps(third))
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001 - anything here is the child's own failure
            import traceback

            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    deadline = t0 + timeout
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, _, usage = os.wait4(pid, 0)
            return "timeout", time.time() - t0, usage.ru_utime + usage.ru_stime
        time.sleep(0.05)
    dt_, cpu = time.time() - t0, usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        return "failed", dt_, cpu  # the mutant crashed the interpreter: caught
    rc = os.WEXITSTATUS(status)
    # pytest: 0 all passed, 1 some failed, 2 interrupted (an import error in collection counts:
    # the mutant broke the module), 3 internal error, 4 usage error, 5 nothing collected.
    return {0: "passed", 1: "failed", 2: "failed"}.get(rc, "error"), dt_, cpu


_TRACE_TARGET = [""]


# -- the benchmark ----------------------------------------------------------------------------
def wilson(k: int, n: int, z: float = 1.959964) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [round(max(0.0, mid - half), 4), round(min(1.0, mid + half), 4)]


def make_overlay(tmp: Path) -> Path:
    """A snapshot of the package (``tmp/src/reasonlab``) with the repository's data folder
    linked beside it (paths relative to the package resolve the same)."""
    src = tmp / "src"
    shutil.copytree(SRC / "reasonlab", src / "reasonlab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("data", "configs", "shared"):
        if (ROOT / name).exists():
            (tmp / name).symlink_to(ROOT / name)
    return src


class BaselineFailed(RuntimeError):
    """The module's tests fail without any mutant: nothing can be scored."""


def mutate_module(t: Target, overlay_src: Path, work: Path, *, max_mutants: int, seed: int,
                  budget_s: float, threads: int, verbose: bool = True) -> dict:
    started = time.time()
    file = overlay_src / t.path.relative_to(SRC)
    source = file.read_text()
    all_mutants = list_mutants(source, t.functions)
    rng = random.Random(seed)
    sample = (sorted(rng.sample(all_mutants, max_mutants), key=lambda m: m.index)
              if 0 < max_mutants < len(all_mutants) else all_mutants)
    # the unmutated run: must pass; its time sets the timeout; it records the lines run
    trace = work / f"{t.module}.lines.json"
    _TRACE_TARGET[0] = str(file)
    status, base_s, base_cpu = run_tests(overlay_src, t.tests, max(900.0, budget_s),
                                         work / f"{t.module}.base.log", trace_file=trace,
                                         threads=threads)
    if status != "passed":
        log = (work / f"{t.module}.base.log").read_text()[-3000:]
        raise BaselineFailed(f"the unmutated tests of {t.module} do not pass ({status}):\n{log}")
    covered = set(json.loads(trace.read_text()))
    preload_more(json.loads(trace.with_suffix(".modules.json").read_text()))
    timeout = max(60.0, 3.0 * base_s + 10.0)
    cpu_total = 0.0
    counts = {"killed": 0, "timeout": 0, "survived": 0, "equivalent": 0, "not_run": 0,
              "not_covered": 0, "error": 0}
    survivors, equivalents = [], []
    try:
        for m in sample:
            reason = is_equivalent(t.rel, m)
            if reason:
                counts["equivalent"] += 1
                equivalents.append({"file": t.rel, "line": m.line, "change": m.change, "reason": reason})
                continue
            if m.line not in covered:
                counts["survived"] += 1
                counts["not_covered"] += 1
                survivors.append({"file": t.rel, "line": m.line, "function": m.function,
                                  "change": m.change, "code": m.source_line, "covered": False})
                continue
            if time.time() - started > budget_s:
                counts["not_run"] += 1
                continue
            file.write_text(mutated_source(source, t.functions, m.index))
            status, secs, cpu = run_tests(overlay_src, t.tests, timeout,
                                          work / f"{t.module}.{m.index}.log", threads=threads)
            cpu_total += cpu
            key = {"failed": "killed", "passed": "survived"}.get(status, status)
            counts[key] += 1
            if status == "passed":
                survivors.append({"file": t.rel, "line": m.line, "function": m.function,
                                  "change": m.change, "code": m.source_line, "covered": True})
            if verbose:
                print(f"  {t.module}:{m.line} {m.change:28s} {key:9s} {secs:6.1f}s "
                      f"({cpu:.1f} cpu-s)", flush=True)
    finally:
        file.write_text(source)
    caught = counts["killed"] + counts["timeout"]
    decided = caught + counts["survived"]
    return {"what": t.what, "file": t.rel, "functions": t.functions or "all", "tests": t.tests,
            "mutants_in_scope": len(all_mutants), "sampled": len(sample), **counts,
            "score": round(caught / decided, 4) if decided else None,
            "interval95": wilson(caught, decided), "baseline_test_seconds": round(base_s, 1),
            "baseline_cpu_seconds": round(base_cpu, 1), "mutant_cpu_seconds": round(cpu_total, 1),
            "timeout_seconds": round(timeout, 1), "seconds": round(time.time() - started, 1),
            "survivors": survivors, "equivalents": equivalents}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", nargs="*", default=None,
                    help="modules to run (names or unique suffixes, e.g. schedules dpo); default all")
    ap.add_argument("--max-mutants", type=int, default=40,
                    help="fixed-seed sample of at most this many mutants per module (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-minutes", type=float, default=20.0,
                    help="total time; shared evenly by the modules still to run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each test run")
    ap.add_argument("--quick", action="store_true", help="8 mutants per module, 10 minutes")
    ap.add_argument("--fresh", action="store_true",
                    help="write only this run's modules (default: update an existing result file)")
    ap.add_argument("--list", action="store_true", help="print the mutants of the modules and exit")
    args = ap.parse_args(argv)
    if args.quick:
        args.max_mutants, args.budget_minutes = 8, 10.0
    if args.max_mutants < 0 or args.budget_minutes <= 0 or args.threads < 1:
        raise SystemExit("--max-mutants must be >= 0, --budget-minutes > 0 and --threads >= 1")
    targets = TARGETS
    if args.modules:
        targets = []
        for name in args.modules:
            hits = [t for t in TARGETS if t.module == name or t.module.endswith("." + name)]
            if len(hits) != 1:
                raise SystemExit(f"--modules: {name!r} matches {len(hits)} target modules; "
                                 f"known: {', '.join(t.module for t in TARGETS)}")
            targets.append(hits[0])
    if args.list:
        for t in targets:
            for m in list_mutants(t.path.read_text(), t.functions):
                print(f"{t.rel}:{m.line}  {m.function}  {m.change}  | {m.source_line}")
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    _preload()
    modules: dict[str, dict] = {}
    start = time.time()
    budget = args.budget_minutes * 60.0
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        work = Path(tmp)
        for i, t in enumerate(targets):
            share = (budget - (time.time() - start)) / (len(targets) - i)
            print(f"{t.module}: {t.what} ({share / 60:.1f} min)", flush=True)
            # a fresh snapshot per module: the source the module's tests see is the current one
            overlay = make_overlay(work / f"overlay-{i}")
            try:
                modules[t.module] = mutate_module(t, overlay, work, max_mutants=args.max_mutants,
                                                  seed=args.seed, budget_s=max(share, 0.0),
                                                  threads=args.threads)
            except BaselineFailed as e:  # skip it (its old entry is kept), go on with the rest
                failed.append(t.module)
                print(e, flush=True)
            shutil.rmtree(overlay.parent, ignore_errors=True)
    if not modules:
        raise SystemExit(f"no module could be measured; unmutated tests fail for {failed}")
    for r in modules.values():
        r.update({"seed": args.seed, "max_mutants": args.max_mutants, "threads": args.threads,
                  "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")})
    old = {}
    if RESULT.exists() and not args.fresh:
        old = json.loads(RESULT.read_text()).get("modules", {})
    merged = {**old, **modules}
    merged = {t.module: merged[t.module] for t in TARGETS if t.module in merged}
    payload = summarize(merged)
    payload["config"] = {"command": "python benchmarks/mutation.py " + " ".join(argv or sys.argv[1:]),
                         "threads": args.threads, "seconds": round(time.time() - start, 1)}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_result

    write_result("mutation", payload)
    print_summary(payload)
    if failed:
        print(f"\nnot measured (their unmutated tests fail): {', '.join(failed)}")
    return 1 if failed else 0


def summarize(modules: dict[str, dict]) -> dict:
    caught = sum(r["killed"] + r["timeout"] for r in modules.values())
    decided = caught + sum(r["survived"] for r in modules.values())
    survivors = [s for r in modules.values() for s in r.get("survivors", [])]
    table = {m: {k: r[k] for k in ("killed", "timeout", "survived", "not_covered", "equivalent",
                                   "not_run", "sampled", "mutants_in_scope", "score", "interval95",
                                   "what", "file", "functions", "tests", "baseline_test_seconds",
                                   "baseline_cpu_seconds", "mutant_cpu_seconds", "seconds", "seed", "max_mutants", "date", "threads")
                 if k in r} | {"equivalents": r.get("equivalents", []),
                               "survivors": r.get("survivors", [])}
             for m, r in modules.items()}
    scores = [r["score"] for r in modules.values() if r["score"] is not None]
    return {"modules": table, "overall_score": round(caught / decided, 4) if decided else None,
            "overall_interval95": wilson(caught, decided),
            "min_module_score": min(scores) if scores else None,
            "modules_at_or_above_0.9": sum(s >= 0.9 for s in scores), "n_modules": len(scores),
            "modules_not_measured": [t.module for t in TARGETS if t.module not in modules],
            "survivors": survivors}


def print_summary(payload: dict) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import print_table

    rows = [(m.removeprefix("reasonlab."), r["sampled"], r["killed"], r["timeout"], r["survived"],
             r["not_covered"], r["equivalent"], r["not_run"],
             "-" if r["score"] is None else f"{r['score']:.0%}",
             f"{r['interval95'][0]:.0%}-{r['interval95'][1]:.0%}")
            for m, r in payload["modules"].items()]
    print()
    print_table(rows, ("module", "sampled", "killed", "timeout", "survived", "(not run by tests)",
                       "equivalent", "not run", "score", "95% interval"))
    print(f"\noverall score {payload['overall_score']:.1%} "
          f"({payload['overall_interval95'][0]:.0%}-{payload['overall_interval95'][1]:.0%})")
    if payload["survivors"]:
        print("\nsurvivors:")
        for s in payload["survivors"]:
            print(f"  {s['file']}:{s['line']} ({s['function']}) {s['change']}  | {s['code']}")


if __name__ == "__main__":
    raise SystemExit(main())
