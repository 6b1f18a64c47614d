"""Graded test cases for answer checking: answers in many surface forms, and reference solutions
re-written so that their final answer is stated the way models write it.

:func:`surface_case` renders one number (integer, decimal, fraction, mixed number, negative) as
a model's last line in one of :data:`SURFACE_FORMS` (trailing words, punctuation, markdown,
LaTeX, thousands commas, units, currency, ``####``...). :func:`rewritten_cases` turns MATH
reference solutions into solutions whose answer is written inline, as display math, as a
relation (``x = ...``, ``x \\in ...``, ``\\mathbf{M} = ...``), inside ``\\(...\\)`` or followed
by text, plus GSM8K rationales ending in the GSM8K-style forms; each is paired with its own
reference (expected: verifies) and with another problem's reference (expected: does not).
Used by the tests and by ``benchmarks/answers.py``; pure (no I/O, seeded).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

from reasonlab.data.answers import last_boxed, normalize_answer
from reasonlab.data.problem import Problem

KINDS = ("int", "decimal", "fraction", "mixed")
SURFACE_FORMS = (
    "answer_is", "trailing_words", "trailing_numbers", "markdown", "final_colon", "boxed",
    "gsm8k", "inline", "display", "paren", "relation", "units", "currency", "commas")
PERTURBATIONS = ("plus_one", "minus_one", "times_ten", "negate", "digits")
UNITS = ("cm", "meters", "dollars", "hours", "apples", "kg")


@dataclass(frozen=True)
class Case:
    """One grading case: ``completion`` graded against ``reference`` should give ``expected``."""

    completion: str
    reference: str
    expected: bool
    form: str
    source: str = ""


# --------------------------------------------------------------------------- surface forms


def _plain(v: Fraction, kind: str, latex: bool, commas: bool = False) -> str:
    """``v`` written as ``kind`` (plain text, or LaTeX inside math when ``latex``)."""
    sign = "-" if v < 0 else ""
    a = abs(v)
    if kind == "int" or a.denominator == 1:
        n = int(a)
        return sign + (f"{n:,}" if commas else str(n)).replace(",", "{,}" if latex else ",")
    if kind == "decimal":
        return sign + f"{float(a):.{len(str(a.denominator)) + 1}f}".rstrip("0")
    if kind == "mixed" and a > 1:
        whole, rest = divmod(a.numerator, a.denominator)
        if latex:
            return f"{sign}{whole}\\frac{{{rest}}}{{{a.denominator}}}"
        return f"{sign}{whole} {rest}/{a.denominator}"
    if latex:
        return f"{sign}\\frac{{{a.numerator}}}{{{a.denominator}}}"
    return f"{sign}{a.numerator}/{a.denominator}"


def value_of(kind: str, n: int, d: int, negative: bool) -> Fraction:
    """A value of ``kind`` from two positive integers (the shape hypothesis draws)."""
    n, d = max(1, n), max(2, d)
    if kind == "int":
        v = Fraction(n)
    elif kind == "decimal":
        v = Fraction(n * 100 + d, 100) if d % 10 else Fraction(n * 10 + 3, 10)
    elif kind == "fraction":
        v = Fraction(n, d) if n % d else Fraction(n, d + 1)
    else:  # mixed: a whole part and a proper fraction
        v = n + Fraction(1 + n % (d - 1), d) if d > 2 else n + Fraction(1, 3)
    return -v if negative else v


def reference_text(v: Fraction, kind: str) -> str:
    """How a data set would write the reference answer (integers plain, fractions in LaTeX)."""
    if v.denominator == 1 or kind == "decimal":
        return _plain(v, kind, latex=False)
    return _plain(v, "fraction", latex=True)


def perturb(v: Fraction, how: str) -> Fraction:
    """A different value a model could plausibly write instead of ``v``."""
    if how == "plus_one":
        return v + 1
    if how == "minus_one":
        return v - 1
    if how == "times_ten":
        return v * 10 if v else Fraction(10)
    if how == "negate":
        return -v if v else Fraction(-1)
    digits = str(abs(v.numerator))  # "digits": the numerator's digits swapped or one appended
    swapped = digits[::-1] if len(digits) > 1 and digits[::-1] != digits else digits + "1"
    w = Fraction(int(swapped), v.denominator)
    return -w if v < 0 else w


def surface_case(v: Fraction, kind: str, form: str, *, unit: str = "cm",
                 rationale: str = "First 3 + 4 = 7, and 7 * 2 = 14.") -> str:
    """A completion whose final answer is ``v`` written as ``kind`` in surface ``form``."""
    plain, tex = _plain(v, kind, latex=False), _plain(v, kind, latex=True)
    big = _plain(v, kind, latex=False, commas=True)
    lines = {
        "answer_is": f"The answer is {plain}.",
        "trailing_words": f"The answer is {plain} in total, as asked.",
        "trailing_numbers": f"The answer is {plain}, because 3 + 4 = 7 and 12 - 5 = 7.",
        "markdown": f"The answer is **{plain}**.",
        "final_colon": f"Final answer: {plain}",
        "boxed": f"So the result is $\\boxed{{{tex}}}$.",
        "gsm8k": f"#### {plain}",
        "inline": f"So the result is ${tex}$.",
        "display": f"So the result is\n\\[ {tex}. \\]",
        "paren": f"The answer is \\({tex}\\).",
        "relation": f"Solving, we get $x = {tex}$.",
        "units": f"The answer is {plain} {unit}.",
        "currency": f"The answer is {'-' if v < 0 else ''}${_plain(abs(v), kind, False, True)}.",
        "commas": f"The answer is {big}.",
    }
    if form not in lines:
        raise ValueError(f"unknown surface form {form!r}; known: {list(SURFACE_FORMS)}")
    return f"{rationale}\n{lines[form]}"


def surface_cases(n: int, seed: int = 0) -> list[Case]:
    """``n`` seeded pairs of cases (right answer: verifies; perturbed answer: does not)."""
    rng = random.Random(seed)
    out: list[Case] = []
    for _ in range(n):
        kind, form = rng.choice(KINDS), rng.choice(SURFACE_FORMS)
        v = value_of(kind, rng.randint(1, 5000), rng.randint(2, 97), rng.random() < 0.3)
        w = perturb(v, rng.choice(PERTURBATIONS))
        ref = reference_text(v, kind)
        unit = rng.choice(UNITS)
        out.append(Case(surface_case(v, kind, form, unit=unit), ref, True, form))
        out.append(Case(surface_case(w, kind, form, unit=unit), ref, False, form))
    return out


# --------------------------------------------------------------------------- rewritten solutions

MATH_FORMS = ("inline_in_place", "inline", "display", "paren", "relation", "text_after")
GSM8K_FORMS = ("gsm8k", "answer_is", "markdown", "trailing_words", "dollar", "last_number")


def _in_math(text: str, i: int) -> bool:
    before = text[:i]
    dollars = len(re.findall(r"(?<!\\)\$", before))
    return dollars % 2 == 1 or before.rfind("\\[") > before.rfind("\\]") or \
        before.rfind("\\(") > before.rfind("\\)")


def _before_last_sentence(text: str, i: int) -> str:
    """``text`` up to the start of the sentence holding position ``i`` (outside math)."""
    cut = 0
    for m in re.finditer(r"(?:[.!?](?:\s+)|\n+)", text[:i]):
        if not _in_math(text, m.start()):
            cut = m.end()
    return text[:cut]


def _kind_of_answer(ans: str) -> str:
    if "matrix" in ans:
        return "matrix"
    if re.fullmatch(r"\s*[\[(].*,.*[\])]\s*", ans) and ("\\infty" in ans or ans.strip()[0] != ans.strip()[-1].replace(")", "(").replace("]", "[")):
        return "interval"
    return "other"


def _math_statement(ans: str, form: str, kind: str) -> str | None:
    if form == "inline":
        return f"Putting this together, we get ${ans}$."
    if form == "display":
        return f"Putting this together, we get\n\\[{ans}.\\]"
    if form == "paren":
        return f"So the value we want is \\({ans}\\)."
    if form == "relation":
        if "=" in ans or "\\text" in ans or re.search(r"[a-zA-Z]\s*[<>]", ans):
            return None
        lhs = {"interval": "x \\in", "matrix": "\\mathbf{M} ="}.get(kind, "x =")
        return f"Therefore $${lhs} {ans}.$$"
    if form == "text_after":
        return f"The final answer is ${ans}$, which completes the solution."
    raise ValueError(form)


def rewrite_math(problem: Problem, form: str) -> str | None:
    """``problem``'s reference solution with its final answer re-written in ``form``
    (None when the form does not fit the answer)."""
    sol = problem.solution
    i = max(sol.rfind("\\boxed"), sol.rfind("\\fbox"))
    ans = last_boxed(sol)
    if i < 0 or ans is None:
        return None
    j = sol.find("{", i)
    end = j + len(ans) + 2
    if form == "inline_in_place":
        inner = ans if _in_math(sol, i) else f"${ans}$"
        return sol[:i] + inner + sol[end:]
    stmt = _math_statement(ans, form, _kind_of_answer(ans))
    if stmt is None:
        return None
    return (_before_last_sentence(sol, i).rstrip() + " " + stmt).strip()


def rewrite_gsm8k(problem: Problem, form: str) -> str:
    """A GSM8K rationale (calculator notes kept) ending in the GSM8K-style ``form``."""
    rationale = problem.solution.rsplit("####", 1)[0].rstrip()
    a = problem.answer.replace(",", "")
    big = f"{int(a):,}" if re.fullmatch(r"-?\d+", a) else a
    end = {
        "gsm8k": f"#### {problem.answer}",
        "answer_is": f"The answer is {a}.",
        "markdown": f"The answer is **{big}**.",
        "trailing_words": f"The answer is {big}, which is the total we were asked for.",
        "dollar": f"So the answer is ${big}.",
        "last_number": f"So that makes {big} in total.",
    }[form]
    return f"{rationale}\n{end}"


def _pick(probs: Sequence[Problem], n: int, rng: random.Random,
          keep: Callable[[Problem], bool]) -> list[Problem]:
    pool = [p for p in probs if keep(p)]
    return rng.sample(pool, min(n, len(pool)))


def rewritten_cases(math_problems: Sequence[Problem], gsm8k_problems: Sequence[Problem], *,
                    n_math: int = 60, n_gsm8k: int = 30, seed: int = 0,
                    same_answer: Callable[[str, str], bool] | None = None) -> list[Case]:
    """Rewritten-solution cases: MATH solutions (a third matrices and intervals when there are
    enough) in :data:`MATH_FORMS` and GSM8K rationales in :data:`GSM8K_FORMS`, each with its own
    reference (expected True) and another problem's distinct reference (expected False).
    ``same_answer(a, b)`` says two references agree; such pairs are not used as negatives."""
    rng = random.Random(seed)
    same = same_answer or (lambda a, b: normalize_answer(a) == normalize_answer(b))
    mats = _pick(math_problems, n_math // 6, rng, lambda p: _kind_of_answer(p.answer) == "matrix")
    ivs = _pick(math_problems, n_math // 6, rng, lambda p: _kind_of_answer(p.answer) == "interval")
    chosen = {p.id for p in mats + ivs}
    rest = _pick(math_problems, n_math - len(mats) - len(ivs), rng,
                 lambda p: p.id not in chosen and last_boxed(p.solution) is not None)
    cases: list[Case] = []

    def add(problems: Sequence[Problem], forms: Sequence[str], render) -> None:
        for k, p in enumerate(problems):
            for form in forms:
                text = render(p, form)
                if text is None:
                    continue
                cases.append(Case(text, p.answer, True, form, p.id))
                for step in range(1, len(problems)):
                    other = problems[(k + step * (1 + rng.randrange(3))) % len(problems)]
                    if other.id != p.id and not same(p.answer, other.answer):
                        cases.append(Case(text, other.answer, False, form, p.id))
                        break

    add(mats + ivs + rest, MATH_FORMS, rewrite_math)
    add(rng.sample(list(gsm8k_problems), min(n_gsm8k, len(gsm8k_problems))), GSM8K_FORMS,
        rewrite_gsm8k)
    return cases
