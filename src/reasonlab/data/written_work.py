"""Written-out arithmetic: the scratchpad lines SkillMath's ``columns`` solution styles use.

Column addition and subtraction with carries and borrows, one-digit multiplication digit by
digit, and long division by a one-digit number. Each function returns the work as text that a
tiny model can learn one local fact at a time (the "scratchpad" of Nye et al. 2021,
arXiv:2112.00114; Lee et al. 2023, arXiv:2307.03381). Pure functions of integers.
"""

from __future__ import annotations


def column_work(op: str, x: int, b: int) -> str:
    """Column-by-column work for ``x + b`` or ``x - b`` (x >= b), ones column first.

    A column shows its two digits and the carry (``+ 1``) or borrow (``- 1``) it takes from the
    column before; a subtraction column that borrows shows its top digit plus ten::

        column_work("+", 47, 38) == "7 + 8 = 15, 4 + 3 + 1 = 8"
        column_work("-", 85, 38) == "15 - 8 = 7, 8 - 3 - 1 = 4"

    Written-out carries make every digit of the result a local, one-digit fact, which is what
    lets a tiny model learn multi-digit arithmetic quickly (the "scratchpad" of Nye et al. 2021,
    arXiv:2112.00114; Lee et al. 2023, arXiv:2307.03381).
    """
    if op not in ("+", "-") or min(x, b) < 0 or (op == "-" and x < b):
        raise ValueError(f"column_work: need x + b or x - b with 0 <= b <= x, got {x} {op} {b}")
    xs, bs = str(x)[::-1], str(b)[::-1]
    cols, carry = [], 0
    for i in range(max(len(xs), len(bs))):
        dx, db = int(xs[i]) if i < len(xs) else 0, int(bs[i]) if i < len(bs) else 0
        tail = f" {op} 1" if carry else ""
        if op == "+":
            cols.append(f"{dx} + {db}{tail} = {dx + db + carry}")
            carry = (dx + db + carry) // 10
        else:
            top = dx + 10 if dx - carry < db else dx
            cols.append(f"{top} - {db}{tail} = {top - db - carry}")
            carry = int(top > dx)
    return ", ".join(cols)


def column_line(op: str, x: int, b: int) -> str:
    """A column-style solution line: ``47 + 38: 7 + 8 = 15, 4 + 3 + 1 = 8, so 85``."""
    work = column_work(op, x, b)
    return f"{x} {op} {b}: {work}, so {x + b if op == '+' else x - b}"


def mul_work(x: int, b: int) -> str:
    """Digit-by-digit work for ``x * b`` with one-digit ``b``, ones digit first, carry added::

        mul_work(47, 6) == "7 * 6 = 42, 4 * 6 + 4 = 28"
    """
    if not (0 <= b <= 9) or x < 0:
        raise ValueError(f"mul_work: need x >= 0 and a one-digit b, got {x} * {b}")
    cols, carry = [], 0
    for d in str(x)[::-1]:
        v = int(d) * b + carry
        cols.append(f"{d} * {b}" + (f" + {carry}" if carry else "") + f" = {v}")
        carry = v // 10
    return ", ".join(cols)


def div_work(x: int, b: int) -> str:
    """Long division of ``x`` by a one-digit ``b``, one quotient digit per step::

        div_work(282, 6) == "28 / 6 = 4 r 4, 42 / 6 = 7 r 0"

    The first step takes the shortest leading part of ``x`` that is at least ``b`` (or all of
    it); each next step brings down one digit after the remainder.
    """
    if not (1 <= b <= 9) or x < 0:
        raise ValueError(f"div_work: need x >= 0 and a one-digit b >= 1, got {x} / {b}")
    digits = str(x)
    i = 1
    while i < len(digits) and int(digits[:i]) < b:
        i += 1
    cur, steps = int(digits[:i]), []
    while True:
        steps.append(f"{cur} / {b} = {cur // b} r {cur % b}")
        if i >= len(digits):
            break
        cur = (cur % b) * 10 + int(digits[i])
        i += 1
    return ", ".join(steps)
