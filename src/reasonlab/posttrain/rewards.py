"""Rewards of rejection sampling (Llama 3, arXiv:2407.21783 §4.2.2): a verifier of the final
answer, and for SkillMath a process check of every solution line.

:func:`verifier_reward` is 1 when the completion's final answer equals the reference
(:func:`reasonlab.evals.accuracy.is_correct`, the check every evaluation uses), else 0.
:func:`step_reward` also requires every ``expr = n`` line (and every column-style add/sub line) to
be true arithmetic and the answer to be the last line's result, so a right answer reached through
wrong steps is not kept (the step-level verification of MCTS-DPO, arXiv:2405.00451 §3, and
Step-DPO, arXiv:2406.18629). Pure functions: problem and text in, a number out.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction
from typing import Callable

from reasonlab.data.answers import is_equivalent
from reasonlab.data.problem import Problem
from reasonlab.evals.accuracy import QA_STOP, is_correct

Reward = Callable[[Problem, str], float]


def verifier_reward(problem: Problem, completion: str, answer_format: str = "answer_is") -> float:
    """1.0 when the completion's final answer equals the reference answer, else 0.0."""
    return 1.0 if is_correct(completion, problem.answer, answer_format) else 0.0


_EQ_LINE = re.compile(r"^(?P<lhs>[0-9()+\-*/% ]+)=\s*(?P<rhs>-?\d+)\s*$")
_COLUMN_LINE = re.compile(r"^(?P<x>\d+) (?P<op>[+-]) (?P<b>\d+): .*, so (?P<rhs>\d+)$")


def _arith(expr: str) -> Fraction | None:
    """Exact value of an arithmetic expression of integers with + - * / % and parentheses
    (``/`` is exact division, ``%`` integer remainder); None when it is not one."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return None

    def ev(n: ast.AST) -> Fraction:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, int) and not isinstance(n.value, bool):
            return Fraction(n.value)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        if isinstance(n, ast.BinOp):
            a, b = ev(n.left), ev(n.right)
            if isinstance(n.op, ast.Add):
                return a + b
            if isinstance(n.op, ast.Sub):
                return a - b
            if isinstance(n.op, ast.Mult):
                return a * b
            if isinstance(n.op, ast.Div) and b != 0:
                return a / b
            if isinstance(n.op, ast.Mod) and b != 0 and a.denominator == b.denominator == 1:
                return Fraction(int(a) % int(b))
        raise ValueError("not plain arithmetic")

    try:
        return ev(tree)
    except (ValueError, RecursionError):
        return None


def step_reward(problem: Problem, completion: str, answer_format: str = "answer_is") -> float:
    """A process check for SkillMath-style solutions: 1.0 when the final answer is right, every
    ``expr = n`` line is true arithmetic, and the answer is the last line's result; else 0.0.
    A right answer reached through wrong steps (a lucky guess) gets no reward."""
    text = completion.split(QA_STOP, 1)[0]
    if verifier_reward(problem, text, answer_format) < 1.0:
        return 0.0
    results = []
    for line in text.splitlines():
        if "answer is" in line.lower():
            break
        result = _true_line_result(line.strip())
        if result is None:
            return 0.0
        results.append(result)
    return 1.0 if results and is_equivalent(results[-1], problem.answer) else 0.0


def _true_line_result(line: str) -> str | None:
    """The result of a true solution line: ``expr = n``, or a column-style add/sub line
    (``47 + 38: 7 + 8 = 15, 4 + 3 + 1 = 8, so 85``) whose columns are exactly the right ones.
    None for anything else."""
    from reasonlab.data.skillmath import column_line

    m = _EQ_LINE.match(line)
    if m:
        value = _arith(m["lhs"])
        return m["rhs"] if value is not None and value == int(m["rhs"]) else None
    m = _COLUMN_LINE.match(line)
    if not m:
        return None
    try:  # the line must be exactly the one the generator writes for its operands
        return m["rhs"] if line == column_line(m["op"], int(m["x"]), int(m["b"])) else None
    except ValueError:  # x - b with b > x
        return None

