"""Final-answer extraction and equivalence checking.

:func:`extract_answer` pulls the final answer out of a solution in any of the formats the
project meets: GSM8K ``#### N``, MATH's last ``\\boxed{...}`` (nested braces), SkillMath's
``The answer is N.``, and a last-number fallback. :func:`is_equivalent` decides whether two
answers agree: first our own normalization (commas in numbers, ``$``, ``\\dfrac``, units and
``\\text{}``, degrees, percent, leading zeros, ``x =``...) and exact numeric comparison, then
the ``math-verify`` package for symbolic cases (fractions vs decimals, intervals, tuples...).
"""

from __future__ import annotations

import re
from fractions import Fraction

FORMATS = ("auto", "gsm8k", "boxed", "answer_is", "number")

_NUM_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+")
_GSM_RE = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS_RE = re.compile(r"answer is\s*:?\s*([^\n]*)", re.IGNORECASE)


def _braced(text: str, start: int) -> str | None:
    """Content of the ``{...}`` group opening at ``text[start]`` (nested braces), or None."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif c == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, ``\\boxed 5``) in ``text``."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    rest = idx + (6 if text.startswith("\\boxed", idx) else 5)
    j = rest
    while j < len(text) and text[j] == " ":
        j += 1
    if j < len(text) and text[j] == "{":
        return _braced(text, j)
    if j > rest:  # "\boxed 5": up to the next space or "$"
        m = re.match(r"[^\s$]+", text[j:])
        return m.group(0) if m else None
    return None


def last_number(text: str) -> str | None:
    """The last number in ``text`` (commas between thousands removed), or None."""
    found = _NUM_RE.findall(text)
    return found[-1].replace(",", "") if found else None


def _answer_is(text: str) -> str | None:
    found = _ANSWER_IS_RE.findall(text)
    if not found:
        return None
    s = found[-1].strip()
    if "\\boxed" in s or "\\fbox" in s:
        return last_boxed(s)
    s = re.sub(r"\.\s*$", "", s).strip()
    return s.strip("$ ").strip() or None


def extract_answer(text: str | None, fmt: str = "auto") -> str | None:
    """The final answer in ``text`` as a string, or None when there is none.

    ``fmt``: ``gsm8k`` (``#### N``), ``boxed`` (last ``\\boxed{}``), ``answer_is``
    (``The answer is N.``), ``number`` (last number) or ``auto`` (the first of those found, in
    that order).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown answer format {fmt!r}; known formats: {list(FORMATS)}")
    if not text:
        return None
    if fmt in ("auto", "gsm8k"):
        found = _GSM_RE.findall(text)
        if found and found[-1].strip():
            return found[-1].strip()
        if fmt == "gsm8k":
            return None
    if fmt in ("auto", "boxed"):
        b = last_boxed(text)
        if b is not None or fmt == "boxed":
            return b
    if fmt in ("auto", "answer_is"):
        a = _answer_is(text)
        if a is not None or fmt == "answer_is":
            return a
    return last_number(text)


# --------------------------------------------------------------------------- normalization

_UNIT_WORDS = (
    "square units|sq units|units?|cm|centimeters?|meters?|m|km|kilometers?|mm|inches|inch|in|"
    "feet|foot|ft|yards?|miles?|mph|degrees?|dollars?|cents?|hours?|minutes?|seconds?|days?|"
    "weeks?|years?|months?|pounds?|lbs?|ounces?|grams?|g|kg|liters?|ml|gallons?|sq ft|people|"
    "students|points|percent|marbles|apples|pages|books"
)
_TRAIL_UNITS_RE = re.compile(rf"\s*(?:{_UNIT_WORDS})(?:\^?\{{?[23]\}}?)?\s*\.?$", re.IGNORECASE)
_TEXT_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm|textnormal|operatorname)\s*\{([^{}]*)\}")


def _strip_wrappers(s: str) -> str:
    s = s.strip()
    if "\\boxed" in s or "\\fbox" in s:
        b = last_boxed(s)
        if b is not None:
            s = b
    return s


def normalize_answer(s: str | None) -> str:
    """A canonical string form of an answer, for exact comparison (our own rules)."""
    if s is None:
        return ""
    s = _strip_wrappers(str(s))
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\left\b|\\right\b", "", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    for sp in ("\\!", "\\,", "\\;", "\\:", "\\quad", "\\qquad", "~"):
        s = s.replace(sp, " ")
    s = s.replace("\\ ", " ")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s).replace("\\circ", "").replace("°", "")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace("{,}", ",")
    # \text{...}: drop units after a value, keep the text when it is the whole answer
    texts = _TEXT_RE.findall(s)
    without = _TEXT_RE.sub("", s).strip()
    if texts and without and re.search(r"[\d}]", without):
        s = without
    else:
        s = _TEXT_RE.sub(lambda m: m.group(1), s)
    s = s.strip()
    if re.match(r"^-?[\d.,]+\s", s) or re.match(r"^-?[\d.,/]+[a-zA-Z]{2,}", s):
        s = _TRAIL_UNITS_RE.sub("", s)
    s = re.sub(r"^[a-zA-Z]\s*=\s*(?=\S)", "", s)  # "x = 5" -> "5"
    s = re.sub(r"(?<![\d.])(\d{1,3})((?:,\d{3})+)(?![\d])",
               lambda m: m.group(1) + m.group(2).replace(",", ""), s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", s):
        s = _canon_decimal(s)
    return s


def _canon_decimal(s: str) -> str:
    neg = s.startswith("-")
    body = s.lstrip("-")
    if "." in body:
        whole, frac = body.split(".", 1)
        frac = frac.rstrip("0")
    else:
        whole, frac = body, ""
    whole = whole.lstrip("0") or "0"
    out = whole + ("." + frac if frac else "")
    return "-" + out if neg and out != "0" else out


def _to_number(s: str) -> Fraction | None:
    """A normalized answer as an exact number (integers, decimals, a/b, \\frac{a}{b})."""
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s) or \
        re.fullmatch(r"(-?)\\frac(\d)(\d)", s) or re.fullmatch(r"(-?)(-?\d+)/(-?\d+)", s)
    try:
        if m:
            v = Fraction(int(m.group(2)), int(m.group(3)))
            return -v if m.group(1) else v
        if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", s):
            return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _math_verify(pred: str, ref: str) -> bool:
    try:
        from math_verify import parse, verify
    except ImportError:  # pragma: no cover - math-verify is a dependency
        return False

    def wrap(x: str) -> str:
        return x if ("$" in x or "\\boxed" in x) else f"${x}$"

    try:
        gold = parse(wrap(ref))
        target = parse(wrap(pred))
        if not gold or not target:
            return False
        return bool(verify(gold, target))
    except Exception:  # noqa: BLE001 - a parser failure means "not shown equal"
        return False


def is_equivalent(predicted: str | None, reference: str | None, *, use_math_verify: bool = True) -> bool:
    """Whether a predicted final answer equals the reference answer.

    Both are answers, not whole solutions (use :func:`check_answer` for a solution text).
    Normalized strings and exact numbers decide first; ``math-verify`` handles the rest.
    """
    if predicted is None or reference is None:
        return False
    a, b = normalize_answer(predicted), normalize_answer(reference)
    if not a or not b:
        return False
    if a == b:
        return True
    na, nb = _to_number(a), _to_number(b)
    if na is not None and nb is not None:
        return na == nb or abs(float(na) - float(nb)) <= 1e-9 * max(1.0, abs(float(nb)))
    if not use_math_verify:
        return False
    if _math_verify(a, b):
        return True
    raw_p, raw_r = str(predicted).strip(), str(reference).strip()
    return (raw_p, raw_r) != (a, b) and _math_verify(raw_p, raw_r)


def check_answer(completion: str, reference: str, fmt: str = "auto") -> bool:
    """Extract the final answer from a model's completion and compare it with ``reference``."""
    return is_equivalent(extract_answer(completion, fmt), reference)
