"""Final-answer extraction and equivalence checking: one function, :func:`check_answer`.

``check_answer(completion, reference)`` grades a whole solution text. The final answer is taken
by the first rule that applies, in this order (the same order :func:`extract_answer` uses):

1. GSM8K ``#### N`` (the last such line);
2. the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces);
3. the last ``The answer is X`` / ``final answer is X`` / ``Answer: X``, cut where the answer
   ends (a ``$...$``/``\\(...\\)`` group, a number with an optional unit word, a bracket group,
   else up to the end of the sentence), so trailing words do not become part of it;
4. MATH-style text (any ``$``, ``\\(`` or ``\\[`` in it, symbolic modes only): ``math-verify``'s
   own LaTeX and expression extraction over the whole completion;
5. the last number in the text.

Two answers are compared by :func:`is_equivalent`: our normalization first (``$``, commas in
numbers, ``\\dfrac``, markdown emphasis, ``\\text{}``, degrees, percent, ``x =``, mixed numbers,
number ranges, units: a unit is dropped when only one side has one, two different units never
match) and exact rational comparison; then, in the symbolic modes, ``math-verify``'s ``verify``
for what is left (fractions vs decimals, radicals, intervals, sets, matrices, relations), under a
time limit so a pathological answer cannot hang an evaluation.

Grading modes (:data:`MODES`): ``numeric`` (GSM8K, SVAMP, SkillMath: steps 1-3 and 5, exact
numbers, no symbolic engine), ``symbolic`` (MATH: steps 1-4, then ``math-verify``), ``auto`` (the
default: every step). :func:`grading_mode` gives a data set's mode.

Compared against: ``math-verify`` (github.com/huggingface/Math-Verify) ``parse`` + ``verify``,
whose extraction we call for step 4; the regression cases follow its test-table idea.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import select
import struct
import subprocess
import sys
import threading
from fractions import Fraction
from typing import Any, Callable

log = logging.getLogger(__name__)

FORMATS = ("auto", "gsm8k", "boxed", "answer_is", "math", "number")
MODES = ("auto", "numeric", "symbolic")
DATASET_MODES = {"gsm8k": "numeric", "svamp": "numeric", "skillmath": "numeric",
                 "math": "symbolic", "math500": "symbolic"}
DEFAULT_TIMEOUT = 10.0  # seconds for one symbolic extraction or comparison

_NUM_RE = re.compile(r"(?<![\w)\]}.])-?\d+(?:,\d{3})*(?:\.\d+)?|(?<![\w)\]}.])-?\.\d+|\d+(?:,\d{3})*(?:\.\d+)?")
_GSM_RE = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS_RE = re.compile(r"(?:answer\s+is|answer\s*:)\s*:?\s*([^\n]*)", re.IGNORECASE)
_LATEX_MATH_RE = re.compile(r"\$|\\\(|\\\[")
_EMPH_RE = re.compile(r"\*\*|__|(?<![\w*])\*(?=\S)|(?<=\S)\*(?![\w*])|`")

class _OwnTimeoutNotice(logging.Filter):
    """Drop math-verify's notice that its own timer is off: :func:`symbolic` is the timer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_OwnTimeoutNotice())


def grading_mode(dataset: str | None) -> str:
    """The grading mode of a data set: ``numeric`` for GSM8K-style sets, ``symbolic`` for MATH,
    ``auto`` for anything else (or ``None``)."""
    return DATASET_MODES.get((dataset or "").lower(), "auto")


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown grading mode {mode!r}; known modes: {list(MODES)}")
    return mode


# --------------------------------------------------------------------------- time limit


class SymbolicTimeout(Exception):
    """A symbolic extraction or comparison ran past its time limit."""


# Symbolic work runs in one worker process per client process: sympy can spend minutes inside
# C code (a power tower, a huge factorial) where no signal reaches it, and a thread cannot be
# stopped, so a late call kills the worker (a fresh one starts on the next call).


def _mv_parse(text: str, *, anchors: bool) -> list[Any]:
    """math-verify's ``parse`` with the boxed answer first; ``anchors=False``: ``text`` is an
    answer, not a solution. One config for both, as math-verify caches only the last one's
    compiled patterns."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    cfg = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return parse(text if anchors else _wrap(text), cfg, parsing_timeout=None)


def _mv_verify(gold: list[Any], target: list[Any]) -> bool:
    from math_verify import verify

    return bool(gold and target and verify(gold, target, timeout_seconds=None))


def _op_verify(pred: str, ref: str) -> bool:
    return _mv_verify(_mv_parse(ref, anchors=False), _mv_parse(pred, anchors=False))


def _op_extract(text: str, ref: str | None) -> tuple[str | None, bool]:
    """math-verify's extraction over a whole text (boxed first): (the answer's text, whether its
    parsed form verifies against ``ref``)."""
    found = _mv_parse(text, anchors=True)
    strings = [x for x in found if isinstance(x, str)]
    ok = ref is not None and _mv_verify(_mv_parse(ref, anchors=False), found)
    return (strings[-1].strip().rstrip(".,;").strip() if strings else None), ok


_OPS: dict[str, Callable[..., Any]] = {"verify": _op_verify, "extract": _op_extract}


def _send(stream, obj: Any) -> None:
    data = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _recv(stream) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("the grading worker closed its pipe")
    return pickle.loads(stream.read(struct.unpack("<Q", head)[0]))


def serve_stdio() -> None:  # pragma: no cover - runs in the worker process
    """The worker's loop: requests on stdin, answers on stdout (length-prefixed pickles)."""
    _op_extract("So $x = \\frac{1}{2}$.", "0.5")  # compile math-verify's patterns before timing

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the answer pipe
    _send(out, "ready")
    while True:
        try:
            op, args = _recv(inp)
        except EOFError:
            return
        try:
            _send(out, (True, _OPS[op](*args)))
        except Exception as e:  # noqa: BLE001 - reported to the caller
            _send(out, (False, repr(e)))


class _Worker:
    """One grading subprocess (started on first use, restarted after a kill or a fork)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.owner = -1

    def _start(self) -> None:
        code = "from reasonlab.data.answers import serve_stdio; serve_stdio()"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env={**os.environ,
                                                                  "OMP_NUM_THREADS": "1"})
        self.owner = os.getpid()
        if not self._ready(120) or _recv(self.proc.stdout) != "ready":
            self._stop()
            raise RuntimeError("the symbolic answer-grading worker did not start")

    def _ready(self, timeout: float) -> bool:
        return bool(select.select([self.proc.stdout], [], [], timeout)[0])

    def _stop(self) -> None:
        if self.proc is not None and self.owner == os.getpid():
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def call(self, op: str, args: tuple, timeout: float) -> Any:
        with self.lock:
            if self.proc is None or self.owner != os.getpid() or self.proc.poll() is not None:
                self.proc = None
                self._start()
            _send(self.proc.stdin, (op, args))
            if not self._ready(timeout):
                self._stop()
                raise SymbolicTimeout(f"{op} ran past {timeout}s")
            ok, value = _recv(self.proc.stdout)
        if not ok:
            raise RuntimeError(value)
        return value


_worker = _Worker()


def symbolic(op: str, *args: Any, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
    """Run the ``math-verify`` operation ``op`` (``verify``: two answers; ``extract``: a text and
    a reference) in the worker process, raising :class:`SymbolicTimeout` after ``timeout``
    seconds (the worker is then killed). ``timeout=None`` runs it here, without a limit."""
    if not timeout or timeout <= 0:
        return _OPS[op](*args)
    return _worker.call(op, args, timeout)


# --------------------------------------------------------------------------- extraction


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
    """The last number in ``text`` (commas between thousands removed), or None.

    A hyphen right after a word, digit or bracket is not a minus sign (``5-7`` ends in ``7``)."""
    found = _NUM_RE.findall(text)
    return found[-1].replace(",", "") if found else None


_UNIT_WORDS = (
    "square units|sq units|units?|cm|centimeters?|meters?|m|km|kilometers?|mm|inches|inch|in|"
    "feet|foot|ft|yards?|miles?|mph|degrees?|dollars?|cents?|hours?|hrs?|minutes?|mins?|"
    "seconds?|secs?|days?|weeks?|years?|months?|pounds?|lbs?|ounces?|oz|grams?|g|kg|liters?|l|ml|"
    "gallons?|sq ft|people|persons?|students|points|percent|marbles|apples|pages|books|cookies|"
    "eggs|pieces|items|boxes|bags|cups|miles per hour|km/h|m/s|euros?|pesos?|calories"
)
_UNIT_RE = re.compile(rf"(?:{_UNIT_WORDS})(?:\^?\{{?[23]\}}?)?(?![\w])", re.IGNORECASE)
_NUMBER_SPAN_RE = re.compile(
    r"[-−]?\\?\$?\s*\d[\d,]*(?:\.\d+)?"           # -$1,250.50
    r"(?:\s+\d+/\d+|/\d+)?"                        # 3 1/2, 7/2
    r"(?:\s*[-–—]\s*\d[\d,]*(?:\.\d+)?)?"          # a range 5-7
    r"(?:\s*\\?%|\s*°)?")


def _close(text: str, i: int, opener: str, closer: str) -> int | None:
    depth = 0
    for j in range(i, len(text)):
        if text[j] == opener:
            depth += 1
        elif text[j] == closer:
            depth -= 1
            if depth == 0:
                return j
    return None


def _answer_span(rest: str) -> str | None:
    """The answer at the start of ``rest`` (the text after "The answer is" or "####"), cut where
    it ends, so that trailing words, punctuation and markdown do not become part of it."""
    s = _EMPH_RE.sub("", rest).strip().lstrip(":").strip()
    if not s:
        return None
    if "\\boxed" in s or "\\fbox" in s:
        return last_boxed(s)
    for open_, close_ in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if s.startswith(open_):
            j = s.find(close_, len(open_))
            inner = s[len(open_):j] if j >= 0 else s[len(open_):]
            return inner.strip().rstrip(".").strip() or None
    m = _NUMBER_SPAN_RE.match(s)
    if m and re.match(r"\s*(?:[\\^_{(+*/=<>]|[a-zA-Z](?![a-zA-Z]))", s[m.end():]) and \
            not re.match(r"\s*\\(?:text|%|\$|,|;|quad)", s[m.end():]):
        m = None  # "2\frac{1}{4}", "2x", "3 + 4 = 7": an expression, not a bare number
    if m:
        out = m.group(0).strip()
        after = s[m.end():]
        u = re.match(r"\s*(?:\\text\{\s*([^{}]*)\}|([^\W\d_][\w/]*(?: per \w+)?))", after)
        if u:
            word = (u.group(1) or u.group(2) or "").strip()
            if word and _UNIT_RE.fullmatch(word):
                out = f"{out} {word}"
        return out
    if s[0] in "([{":
        j = _close(s, 0, s[0], {"(": ")", "[": "]", "{": "}"}[s[0]])
        if j is None and s[0] in "([":  # half-open interval "(1, 2]"
            j = next((k for k, c in enumerate(s) if c in ")]"), None)
        if j is not None:
            return s[:j + 1]
    m = re.match(r"(.+?)(?:[.;!?](?:\s|$)|,\s|\s+(?:because|since|which|so|as|and then|"
                 r"for|if|when|where)\s|$)", s)
    return m.group(1).strip() if m else s


def _answer_is(text: str) -> str | None:
    for rest in reversed(_ANSWER_IS_RE.findall(text)):
        span = _answer_span(rest)
        if span:
            return span
    return None


def _math_verify_extract(text: str, ref: str | None, timeout: float | None
                         ) -> tuple[str | None, bool]:
    """``math-verify``'s extraction over ``text``: (the answer's text or None, whether it
    verifies against ``ref`` as math-verify parsed it)."""
    try:
        return symbolic("extract", text, ref, timeout=timeout)
    except SymbolicTimeout:
        log.warning("math-verify extraction timed out after %ss", timeout)
    except Exception:  # noqa: BLE001 - an unparsable text has no answer
        pass
    return None, False


def extract_answer(text: str | None, fmt: str = "auto", *, mode: str = "auto",
                   timeout: float | None = DEFAULT_TIMEOUT) -> str | None:
    """The final answer in ``text`` as a string, or None when there is none.

    ``fmt``: ``gsm8k`` (``#### N``), ``boxed`` (last ``\\boxed{}``), ``answer_is``
    (``The answer is N.``), ``math`` (``math-verify``'s extraction), ``number`` (last number)
    or ``auto`` (the module's order of precedence; ``math`` is skipped in ``numeric`` mode and
    for text without LaTeX math).
    """
    return _extract(text, fmt, mode, timeout)[0]


def _extract(text: str | None, fmt: str, mode: str, timeout: float | None,
             reference: str | None = None) -> tuple[str | None, bool]:
    """(the answer's text, whether step 4 found it and math-verify verified it as parsed)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown answer format {fmt!r}; known formats: {list(FORMATS)}")
    _check_mode(mode)
    if not text:
        return None, False
    if fmt in ("auto", "gsm8k"):
        for rest in reversed(_GSM_RE.findall(text)):
            span = _answer_span(rest)
            if span:
                return span, False
        if fmt == "gsm8k":
            return None, False
    if fmt in ("auto", "boxed"):
        b = last_boxed(text)
        if b is not None or fmt == "boxed":
            return b, False
    if fmt in ("auto", "answer_is"):
        a = _answer_is(text)
        if a is not None or fmt == "answer_is":
            return a, False
    if fmt == "math" or (fmt == "auto" and mode != "numeric" and _LATEX_MATH_RE.search(text)):
        found, ok = _math_verify_extract(text, reference, timeout)
        if found is not None or fmt == "math":
            return found, ok
    return last_number(text), False


# --------------------------------------------------------------------------- normalization

_TEXT_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm|textnormal|operatorname)\s*\{([^{}]*)\}")
_UNIT_ALIASES = {
    "centimeter": "cm", "meter": "m", "kilometer": "km", "millimeter": "mm", "inche": "in",
    "inch": "in", "feet": "ft", "foot": "ft", "yard": "yd", "mile": "mi", "hr": "hour",
    "min": "minute", "sec": "second", "lb": "pound", "gram": "g", "liter": "l", "kilogram": "kg",
    "sq unit": "unit^2", "square unit": "unit^2", "miles per hour": "mph", "dollar": "", "cent":
    "cent", "degree": "", "percent": "", "unit": "",
}


def _unit_key(unit: str) -> str:
    """Canonical unit name: lowercase, singular, aliases merged ('' = no real unit)."""
    u = re.sub(r"\s+", " ", unit.strip().lower().rstrip("."))
    u = re.sub(r"\^?\{?([23])\}?$", r"^\1", u)
    base, _, power = u.partition("^")
    if len(base) >= 3 and base.endswith("s") and not base.endswith("ss"):
        base = base[:-1]
    base = _UNIT_ALIASES.get(base, base)
    return f"{base}^{power}" if power and base else base


def _strip_wrappers(s: str) -> str:
    s = s.strip()
    if "\\boxed" in s or "\\fbox" in s:
        b = last_boxed(s)
        if b is not None:
            s = b
    return s


def _squeeze_spaces(s: str) -> str:
    """Drop whitespace except between two digits (``12 15`` stays two numbers)."""
    s = re.sub(r"\s+", " ", s).strip()
    return re.sub(r"(?<!\d) | (?!\d)", "", s)


def _canonical(s: str | None) -> tuple[str, str]:
    """(normalized value, unit key) of an answer string; see :func:`normalize_answer`."""
    if s is None:
        return "", ""
    s = _strip_wrappers(str(s))
    s = _EMPH_RE.sub("", s).strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\left\b|\\right\b", "", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    s = s.replace("\\[", "").replace("\\]", "").replace("−", "-")
    for sp in ("\\!", "\\,", "\\;", "\\:", "\\quad", "\\qquad", "~"):
        s = s.replace(sp, " ")
    s = s.replace("\\ ", " ")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s).replace("\\circ", "").replace("°", "")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace("{,}", ",")
    unit = ""
    # \text{...}: a unit after a value, or the whole answer when there is no value
    texts = _TEXT_RE.findall(s)
    without = _TEXT_RE.sub("", s).strip()
    if texts and without and re.search(r"[\d}]", without):
        if re.fullmatch(r"-?[\d.,/ ]+|\\frac\{\d+\}\{\d+\}", without) and texts[-1].strip():
            unit = _unit_key(texts[-1])
        s = without
    else:
        s = _TEXT_RE.sub(lambda m: m.group(1), s)
    s = s.strip().rstrip(".").strip()
    m = re.match(r"^(-?[\d.,/]+(?:\s+\d+/\d+|\s*[-–—]\s*[\d.,]+)?)\s*([a-zA-Z][a-zA-Z /]*?(?:\^?\{?[23]\}?)?)$", s)
    if m and _UNIT_RE.fullmatch(m.group(2).strip()):
        s, unit = m.group(1), _unit_key(m.group(2))
    s = re.sub(r"^[a-zA-Z]\s*=\s*(?=\S)", "", s)  # "x = 5" -> "5"
    s = re.sub(r"(?<![\d.])(\d{1,3})((?:,\d{3})+)(?![\d])",
               lambda m: m.group(1) + m.group(2).replace(",", ""), s)
    mixed = (re.fullmatch(r"(-?)(\d+)\s+(\d+)\s*/\s*(\d+)", s)
             or re.fullmatch(r"(-?)(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}", s))
    if mixed and int(mixed.group(3)) < int(mixed.group(4)) and int(mixed.group(4)):
        v = int(mixed.group(2)) + Fraction(int(mixed.group(3)), int(mixed.group(4)))
        s = f"{mixed.group(1)}{v.numerator}/{v.denominator}"
    rng = re.fullmatch(r"(\d+(?:\.\d+)?)(?:-|\s*[–—]\s*|\s+to\s+)(\d+(?:\.\d+)?)", s)
    if rng:  # a range "5-7" is not a subtraction
        return f"range({_canon_decimal(rng.group(1))},{_canon_decimal(rng.group(2))})", unit
    s = _squeeze_spaces(s).rstrip(".")
    if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", s):
        s = _canon_decimal(s)
    return s, unit


def normalize_answer(s: str | None) -> str:
    """A canonical string form of an answer's value, for exact comparison (our own rules;
    a trailing unit is dropped, see :func:`is_equivalent` for how units are compared)."""
    return _canonical(s)[0]


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


def _wrap(x: str) -> str:
    return x if ("$" in x or "\\boxed" in x or "\\[" in x or "\\(" in x) else f"${x}$"


def _math_verify(pred: str, ref: str, timeout: float | None = DEFAULT_TIMEOUT) -> bool:
    """``math-verify``'s ``parse`` + ``verify`` of two answers within ``timeout`` seconds."""
    try:
        return bool(symbolic("verify", pred, ref, timeout=timeout))
    except SymbolicTimeout:
        log.warning("math-verify comparison timed out after %ss: %.80r vs %.80r", timeout, pred, ref)
    except Exception:  # noqa: BLE001 - a parser failure means "not shown equal"
        pass
    return False


def is_equivalent(predicted: str | None, reference: str | None, *, use_math_verify: bool = True,
                  mode: str = "auto", timeout: float | None = DEFAULT_TIMEOUT) -> bool:
    """Whether a predicted final answer equals the reference answer.

    Both are answers, not whole solutions (use :func:`check_answer` for a solution text).
    Normalized strings and exact numbers decide first; two different units never match; in the
    ``auto``/``symbolic`` modes ``math-verify`` handles the rest within ``timeout`` seconds.
    """
    _check_mode(mode)
    if predicted is None or reference is None:
        return False
    (a, ua), (b, ub) = _canonical(predicted), _canonical(reference)
    if not a or not b or (ua and ub and ua != ub):
        return False
    if a == b:
        return True
    na, nb = _to_number(a), _to_number(b)
    if na is not None and nb is not None:
        return na == nb or abs(float(na) - float(nb)) <= 1e-9 * max(1.0, abs(float(nb)))
    if not use_math_verify or mode == "numeric":
        return False
    if a.startswith("range(") or b.startswith("range(") or re.search(r"\d \d", a + "|" + b):
        return False  # ranges and space-separated numbers are compared as written
    if _math_verify(a, b, timeout):
        return True
    raw_p, raw_r = (str(x).strip().rstrip(".").strip() for x in (predicted, reference))
    return (raw_p, raw_r) != (a, b) and _math_verify(raw_p, raw_r, timeout)


def check_answer(completion: str, reference: str, fmt: str = "auto", *, mode: str | None = None,
                 dataset: str | None = None, timeout: float | None = DEFAULT_TIMEOUT) -> bool:
    """Grade a model's whole completion against the ``reference`` answer.

    The final answer is extracted by the module's order of precedence (or ``fmt``) and compared
    with :func:`is_equivalent`. ``mode`` is a grading mode (:data:`MODES`); by default it is the
    mode of ``dataset`` (:func:`grading_mode`), ``auto`` when neither is given.
    """
    mode = _check_mode(mode or grading_mode(dataset))
    pred, verified = _extract(completion, fmt, mode, timeout, reference)
    # an answer found by math-verify's own extraction counts when it verifies as parsed there
    if verified or is_equivalent(pred, reference, mode=mode, timeout=timeout):
        return True
    # a relation ("\\mathbf{v} = ...", "2 + 3 = 5") against a reference that is not one: its
    # right-hand side is the answer
    if pred and "=" in pred and "=" not in reference:
        rhs = pred.rsplit("=", 1)[1].strip().rstrip(".").strip()
        return bool(rhs) and is_equivalent(rhs, reference, mode=mode, timeout=timeout)
    return False
