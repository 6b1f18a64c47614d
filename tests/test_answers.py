"""Answer extraction and equivalence, including agreement with the shipped references."""

from __future__ import annotations

import random

import pytest

from reasonlab.data.answers import (
    check_answer, extract_answer, is_equivalent, last_boxed, last_number, normalize_answer)
from reasonlab.data.datasets import load_dataset


@pytest.mark.parametrize("text,fmt,want", [
    ("She has 3 + 4 = 7 left.\n#### 7", "auto", "7"),
    ("18 * 2 = 36\n#### 1,036", "gsm8k", "1,036"),
    (r"So $x = \boxed{\frac{1}{2}}$.", "auto", r"\frac{1}{2}"),
    (r"\boxed{1} then \boxed{\left( 3, \frac{\pi}{2} \right)}", "boxed", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"\boxed{\{1,\{2\}\}}", "boxed", r"\{1,\{2\}\}"),
    (r"so it is \boxed 5$.", "boxed", "5"),
    ("12 + 5 = 17\nThe answer is 17.", "auto", "17"),
    ("The answer is 3.5.", "answer_is", "3.5"),
    (r"The final answer is $\boxed{42}$.", "auto", "42"),
    ("We get 12 apples, then 1,250 pears.", "auto", "1250"),
    ("no digits here", "auto", None),
    ("", "auto", None),
    ("The answer is 7.", "gsm8k", None),
])
def test_extract_answer(text, fmt, want):
    assert extract_answer(text, fmt) == want


def test_extract_unknown_format_lists_known():
    with pytest.raises(ValueError, match="known formats.*boxed"):
        extract_answer("1", fmt="latex")


def test_helpers():
    assert last_boxed(r"\boxed{a{b}c}") == "a{b}c"
    assert last_boxed("none") is None
    assert last_number("1,234.5 and -7") == "-7"


@pytest.mark.parametrize("pred,ref", [
    ("1,000", "1000"), ("$1{,}000$", "1000"), (r"\dfrac{3}{4}", r"\frac34"), ("0.75", r"\frac{3}{4}"),
    (r"10\%", "10"), (r"5 \text{ cm}", "5"), (r"90^\circ", "90"), ("90°", "90"), ("007", "7"),
    ("2.50", "2.5"), (r"\$18", "18"), ("x = 5", "5"), ("18 dollars", "18"),
    (r"\boxed{12}", "12"), (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
    (r"\text{(C)}", "(C)"), (r"2\sqrt{2}", r"\sqrt{8}"), ("-3", "-3.0"), ("1/2", "0.5"),
])
def test_equivalent(pred, ref):
    assert is_equivalent(pred, ref)


@pytest.mark.parametrize("pred,ref", [
    ("7", "8"), ("10", "100"), (r"\frac{1}{2}", r"\frac{1}{3}"), ("2x", "2"), ("", "3"),
    (None, "3"), ("(1,2)", "(2,1)"), ("1000", "1,001"), ("0.5", "5"),
])
def test_not_equivalent(pred, ref):
    assert not is_equivalent(pred, ref)


def test_normalize():
    assert normalize_answer(r"$\dfrac{1}{2}$") == r"\frac{1}{2}"
    assert normalize_answer(" 0012.500 ") == "12.5"
    assert check_answer("3 * 4 = 12\nThe answer is 12.", "12")
    assert not check_answer("The answer is 13.", "12")


def _derange(n: int, rng: random.Random) -> list[int]:
    perm = list(range(n))
    while any(i == j for i, j in enumerate(perm)):
        rng.shuffle(perm)
    return perm


def test_gsm8k_references_self_verify_and_shuffled_do_not():
    probs = load_dataset("gsm8k", "test")
    ok = sum(is_equivalent(extract_answer(p.solution), p.answer) for p in probs)
    assert ok / len(probs) >= 0.995
    rng = random.Random(0)
    perm = _derange(len(probs), rng)
    pairs = [(i, j) for i, j in enumerate(perm) if probs[i].answer != probs[j].answer]
    hits = sum(is_equivalent(extract_answer(probs[i].solution), probs[j].answer) for i, j in pairs)
    assert hits / len(pairs) <= 0.01


def test_math500_sample_self_verifies_and_shuffled_do_not():
    probs = load_dataset("math500")
    rng = random.Random(1)
    sample = rng.sample(probs, 150)
    ok = sum(is_equivalent(extract_answer(p.solution, "boxed"), p.answer) for p in sample)
    assert ok / len(sample) >= 0.97
    perm = _derange(60, rng)
    sub = sample[:60]
    pairs = [(i, j) for i, j in enumerate(perm) if sub[i].answer != sub[j].answer]
    hits = sum(is_equivalent(extract_answer(sub[i].solution, "boxed"), sub[j].answer)
               for i, j in pairs)
    assert hits / len(pairs) <= 0.02
