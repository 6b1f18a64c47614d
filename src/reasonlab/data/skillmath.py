"""SkillMath: a deterministic generator of short math word problems with known skills.

Thirteen atomic skills (add, sub, mul, div, rem, pct, conv, avg, cmp, rate, lin, area, perim),
each a parametrized generator with nine surface templates and two wording variants per
template (same numbers, same math: what NTKEval needs). Templates 0–2 are the original ones and
the default (``templates: [0, 1, 2]``); templates 3–8 (:mod:`reasonlab.data.skillmath_wordings`)
draw names, objects and containers from lists, so a model can be trained on many wordings and
tested on an unseen one. A problem chains k = 1, 2 or 3 skills,
the result of one step feeding the next as "that" / "that many". The solution has one line per
skill application and ends ``The answer is N.``; answers are non-negative integers. With
``solution_style="columns"`` an add or sub line shows its column-by-column work first
(``47 + 38: 7 + 8 = 15, 4 + 3 + 1 = 8, so 85``; :func:`column_work`). With
``solution_style="columns_all"`` the multiplications by one digit (mul, rate, area) are worked
digit by digit too (``47 * 6: 7 * 6 = 42, 4 * 6 + 4 = 28, so 282``; :func:`mul_work`), divisions
and remainders by long division (``282 / 6: 28 / 6 = 4 r 4, 42 / 6 = 7 r 0, so 47``;
:func:`div_work`) and a comparison by the column subtraction of the smaller from the larger.

Splits: ``train``, ``val`` and ``test`` (same distribution, different seeds, no duplicate
questions across splits), ``test_template`` (only the held-out template of every skill) and
``test_pair`` (chains that contain a held-out ordered skill pair ``a>b``: a's result feeds b).
Training splits never use a held-out template or contain a held-out pair.

Problems are short on purpose: a ~1.6M-parameter character-level model learns the one-step
skills; long word problems defeat it. ``SkillMathConfig(templates=[0])`` keeps only the terse
symbolic template ("What is 12 + 5?").

Use :func:`generate` for all splits, :func:`sample_problems` for an ad-hoc set (e.g. one
skill), :func:`sft_pairs` / :func:`pretraining_texts` for training data in the fixed prompt
format ``Q: {question}\\nA: `` (completion = solution), and :func:`render` for wording variants.
"""

from __future__ import annotations

import dataclasses
import random
import string
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from reasonlab.config import ConfigError, check_choice, check_order, check_range
from reasonlab.data.problem import Problem, read_problems, write_splits  # noqa: F401 (re-exported)
from reasonlab.data.skillmath_wordings import FILLS, WORDINGS
from reasonlab.data.written_work import column_line, column_work, div_work, mul_work  # noqa: F401

PROMPT_TEMPLATE = "Q: {question}\nA: "
SOLUTION_STYLES = ("plain", "columns", "columns_all")
SPLITS = ("train", "val", "test", "test_template", "test_pair")
Args = dict[str, Any]


# --------------------------------------------------------------------------- skills


@dataclass(frozen=True)
class Template:
    """Wordings of one scenario. ``{x}`` is the chained input; ``ref`` names it in a chain."""

    variants: tuple[str, ...]
    ref: str = "that"

    @property
    def fills(self) -> tuple[str, ...]:
        """The fill slots (``name``, ``obj``, ...) its wordings use, sorted."""
        used = {f for v in self.variants for _, f, _, _ in string.Formatter().parse(v) if f}
        return tuple(sorted(used & set(FILLS)))


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    sample: Callable[[random.Random, int | None, "SkillMathConfig"], Args | None]
    compute: Callable[[Args], int]
    line: Callable[[Args, int], str]
    templates: tuple[Template, ...]
    slots: Callable[[Args, str], dict[str, str]] = lambda a, xt: {}


def _num(rng: random.Random, cfg: "SkillMathConfig") -> int:
    return rng.randint(cfg.min_number, cfg.max_number)


def _fac(rng: random.Random, cfg: "SkillMathConfig") -> int:
    return rng.randint(2, cfg.max_factor)


def _s_add(rng, x, cfg):
    return {"x": _num(rng, cfg) if x is None else x, "b": _num(rng, cfg)}


def _s_sub(rng, x, cfg):
    if x is None:
        a, b = _num(rng, cfg), _num(rng, cfg)
        return {"x": max(a, b), "b": min(a, b)}
    if x < cfg.min_number:
        return None
    return {"x": x, "b": rng.randint(cfg.min_number, min(x, cfg.max_number))}


def _s_mul(rng, x, cfg):
    return {"x": _num(rng, cfg) if x is None else x, "b": _fac(rng, cfg)}


def _s_div(rng, x, cfg):
    if x is None:
        b = _fac(rng, cfg)
        return {"x": _num(rng, cfg) * b, "b": b}
    divs = [d for d in range(2, cfg.max_factor + 1) if x > 0 and x % d == 0]
    return {"x": x, "b": rng.choice(divs)} if divs else None


def _s_rem(rng, x, cfg):
    if x is None:
        b = _fac(rng, cfg)
        return {"x": rng.randint(max(cfg.min_number, b + 1), max(cfg.max_number, b + 1)), "b": b}
    hi = min(cfg.max_factor, x - 1)
    return {"x": x, "b": rng.randint(2, hi)} if hi >= 2 else None


_PCTS = (10, 20, 25, 50, 75)


def _s_pct(rng, x, cfg):
    if x is None:
        for _ in range(50):
            x = _num(rng, cfg)
            if any(x * p % 100 == 0 for p in _PCTS):
                break
        else:
            return None
    ps = [p for p in _PCTS if x > 0 and x * p % 100 == 0]
    return {"x": x, "p": rng.choice(ps)} if ps else None


_UNITS = (("hours", "minutes", 60), ("minutes", "seconds", 60), ("feet", "inches", 12),
          ("weeks", "days", 7), ("days", "hours", 24), ("yards", "feet", 3),
          ("meters", "centimeters", 100))


def _s_conv(rng, x, cfg):
    big, small, f = rng.choice(_UNITS)
    if x is None:
        if rng.random() < 0.5:
            return {"x": _num(rng, cfg), "f": f, "frm": big, "to": small, "op": "*"}
        return {"x": _num(rng, cfg) * f, "f": f, "frm": small, "to": big, "op": "/"}
    opts = [(b, s, f, "*") for b, s, f in _UNITS]
    opts += [(s, b, f, "/") for b, s, f in _UNITS if x > 0 and x % f == 0]
    frm, to, f, op = rng.choice(opts)
    return {"x": x, "f": f, "frm": frm, "to": to, "op": op}


def _s_avg(rng, x, cfg):
    n = rng.choice((2, 3))
    x = _num(rng, cfg) if x is None else x
    for _ in range(30):
        rest = [_num(rng, cfg) for _ in range(n - 1)]
        if (x + sum(rest)) % n == 0:
            return {"x": x, "rest": rest}
    return None


def _s_cmp(rng, x, cfg):
    x = _num(rng, cfg) if x is None else x
    for _ in range(10):
        b = _num(rng, cfg)
        if b != x:
            return {"x": x, "b": b}
    return None


def _s_rate(rng, x, cfg):
    return {"x": _num(rng, cfg) if x is None else x, "t": _fac(rng, cfg)}


def _s_lin(rng, x, cfg):
    if x is None:
        a, b, n = _fac(rng, cfg), _num(rng, cfg), _num(rng, cfg)
        return {"x": a * n + b, "a": a, "b": b}
    cands = [(a, b) for a in range(2, cfg.max_factor + 1)
             for b in range(cfg.min_number, min(cfg.max_number, x - a) + 1) if (x - b) % a == 0]
    if not cands:
        return None
    a, b = rng.choice(cands)
    return {"x": x, "a": a, "b": b}


def _s_area(rng, x, cfg):
    return {"x": _num(rng, cfg) if x is None else x, "w": _fac(rng, cfg)}


def _s_perim(rng, x, cfg):
    return {"x": _num(rng, cfg) if x is None else x, "w": _num(rng, cfg)}


def _avg_slots(a: Args, xt: str) -> dict[str, str]:
    items = [xt] + [str(r) for r in a["rest"]]
    return {"nums": ", ".join(items[:-1]) + " and " + items[-1]}


def _T(*variants: str, ref: str = "that") -> Template:
    return Template(tuple(variants), ref)


SKILLS: dict[str, Skill] = {s.name: s for s in [
    Skill("add", "addition", _s_add, lambda a: a["x"] + a["b"],
          lambda a, r: f"{a['x']} + {a['b']} = {r}", (
              _T("What is {x} + {b}?", "Find {x} plus {b}."),
              _T("Tom has {x} apples and gets {b} more. How many does he have?",
                 "Tom had {x} apples. He got {b} more. How many now?", ref="that many"),
              _T("A shelf has {x} books. {b} books are added. How many books are there?",
                 "There are {x} books on a shelf and {b} more are added. How many books now?",
                 ref="that many"))),
    Skill("sub", "subtraction", _s_sub, lambda a: a["x"] - a["b"],
          lambda a, r: f"{a['x']} - {a['b']} = {r}", (
              _T("What is {x} - {b}?", "Find {x} minus {b}."),
              _T("Sam has {x} coins and spends {b}. How many are left?",
                 "Sam had {x} coins. He spent {b}. How many are left?", ref="that many"),
              _T("A bus has {x} people. {b} get off. How many are on the bus?",
                 "There are {x} people on a bus and {b} get off. How many stay?",
                 ref="that many"))),
    Skill("mul", "multiplication", _s_mul, lambda a: a["x"] * a["b"],
          lambda a, r: f"{a['x']} * {a['b']} = {r}", (
              _T("What is {x} * {b}?", "Find {x} times {b}."),
              _T("A box holds {x} pens. How many pens are in {b} boxes?",
                 "There are {b} boxes with {x} pens each. How many pens?", ref="that many"),
              _T("Each row has {x} seats. How many seats are in {b} rows?",
                 "There are {b} rows of {x} seats. How many seats in all?", ref="that many"))),
    Skill("div", "division", _s_div, lambda a: a["x"] // a["b"],
          lambda a, r: f"{a['x']} / {a['b']} = {r}", (
              _T("What is {x} / {b}?", "Find {x} divided by {b}."),
              _T("{x} sweets are shared equally by {b} kids. How many does each get?",
                 "{b} kids share {x} sweets equally. How many does each get?", ref="that many"),
              _T("{x} eggs are packed {b} to a box. How many boxes are filled?",
                 "Pack {x} eggs in boxes of {b}. How many boxes?", ref="that many"))),
    Skill("rem", "remainder", _s_rem, lambda a: a["x"] % a["b"],
          lambda a, r: f"{a['x']} % {a['b']} = {r}", (
              _T("What is {x} mod {b}?", "What is the remainder of {x} / {b}?"),
              _T("{x} cards are dealt equally to {b} players. How many are left over?",
                 "Deal {x} cards equally to {b} players. How many are left?", ref="that many"),
              _T("{x} kids form teams of {b}. How many kids are left out?",
                 "Put {x} kids in teams of {b}. How many have no team?", ref="that many"))),
    Skill("pct", "percent of", _s_pct, lambda a: a["x"] * a["p"] // 100,
          lambda a, r: f"{a['x']} * {a['p']} / 100 = {r}", (
              _T("What is {p}% of {x}?", "Find {p} percent of {x}."),
              _T("A class has {x} students. {p}% of them walk. How many walk?",
                 "{p}% of {x} students walk to school. How many walk?", ref="that many"),
              _T("A shop has {x} toys and sells {p}% of them. How many are sold?",
                 "{p}% of the {x} toys in a shop are sold. How many are sold?",
                 ref="that many"))),
    Skill("conv", "unit conversion", _s_conv,
          lambda a: a["x"] * a["f"] if a["op"] == "*" else a["x"] // a["f"],
          lambda a, r: f"{a['x']} {a['op']} {a['f']} = {r}", (
              _T("How many {to} are in {x} {frm}?", "Convert {x} {frm} to {to}."),
              _T("{x} {frm} is how many {to}?", "Write {x} {frm} in {to}.", ref="that many"),
              _T("A task takes {x} {frm}. How many {to} is that?",
                 "How many {to} does a {x} {frm} task take?", ref="that many")),
          lambda a, xt: {"frm": a["frm"], "to": a["to"]}),
    Skill("avg", "average", _s_avg, lambda a: (a["x"] + sum(a["rest"])) // (1 + len(a["rest"])),
          lambda a, r: "(" + " + ".join(str(v) for v in [a["x"], *a["rest"]])
          + f") / {1 + len(a['rest'])} = {r}", (
              _T("What is the average of {nums}?", "Find the mean of {nums}."),
              _T("Ann scored {nums} on tests. What is her average?",
                 "Ann's test scores are {nums}. What is her mean score?"),
              _T("Boxes weigh {nums} kg. What is the average weight?",
                 "The weights of some boxes are {nums} kg. Find the mean weight.")),
          _avg_slots),
    Skill("cmp", "comparison", _s_cmp, lambda a: abs(a["x"] - a["b"]),
          lambda a, r: f"{max(a['x'], a['b'])} - {min(a['x'], a['b'])} = {r}", (
              _T("What is the difference between {x} and {b}?",
                 "How far apart are {x} and {b}?"),
              _T("Ann has {x} stickers and Ben has {b}. How many more does one have?",
                 "Ben has {b} stickers and Ann has {x}. What is the difference?",
                 ref="that many"),
              _T("Team A scored {x} and team B scored {b}. By how much did one team win?",
                 "The scores were {x} and {b}. What was the winning margin?"))),
    Skill("rate", "rate times time", _s_rate, lambda a: a["x"] * a["t"],
          lambda a, r: f"{a['x']} * {a['t']} = {r}", (
              _T("A car goes {x} km per hour. How far does it go in {t} hours?",
                 "At {x} km per hour, how many km in {t} hours?", ref="that many"),
              _T("A pump moves {x} liters a minute. How many liters in {t} minutes?",
                 "In {t} minutes, how many liters does a pump moving {x} liters a minute move?",
                 ref="that many"),
              _T("Ann reads {x} pages a day. How many pages does she read in {t} days?",
                 "Reading {x} pages a day, how many pages in {t} days?", ref="that many"))),
    Skill("lin", "linear equation", _s_lin, lambda a: (a["x"] - a["b"]) // a["a"],
          lambda a, r: f"({a['x']} - {a['b']}) / {a['a']} = {r}", (
              _T("If {a}n + {b} = {x}, what is n?", "Solve {a}n + {b} = {x} for n."),
              _T("{a} bags and {b} loose apples make {x} apples. How many are in a bag?",
                 "{x} apples fill {a} equal bags with {b} left over. How many in a bag?",
                 ref="that many"),
              _T("{a} pens and a {b} dollar book cost {x} dollars. What does a pen cost?",
                 "Ann pays {x} dollars for {a} pens and a {b} dollar book. Find a pen's price.",
                 ref="that many"))),
    Skill("area", "rectangle area", _s_area, lambda a: a["x"] * a["w"],
          lambda a, r: f"{a['x']} * {a['w']} = {r}", (
              _T("A rectangle is {x} long and {w} wide. What is its area?",
                 "Find the area of a rectangle with length {x} and width {w}."),
              _T("A room is {x} m long and {w} m wide. What is its area?",
                 "What is the area of a room {x} m long and {w} m wide?", ref="that many"),
              _T("A garden is {x} m by {w} m. How many square meters is it?",
                 "How many square meters is a {x} m by {w} m garden?", ref="that many"))),
    Skill("perim", "rectangle perimeter", _s_perim, lambda a: 2 * (a["x"] + a["w"]),
          lambda a, r: f"2 * ({a['x']} + {a['w']}) = {r}", (
              _T("A rectangle is {x} long and {w} wide. What is its perimeter?",
                 "Find the perimeter of a rectangle with length {x} and width {w}."),
              _T("A field is {x} m long and {w} m wide. How much fence goes around it?",
                 "How many meters of fence go around a {x} m by {w} m field?",
                 ref="that many"),
              _T("A photo is {x} cm by {w} cm. How long is its border?",
                 "What is the border length of a {x} cm by {w} cm photo?", ref="that many"))),
]}

ORIGINAL_TEMPLATES = 3  # templates 0-2: the first wordings, the default config's
SKILLS = {n: dataclasses.replace(sk, templates=sk.templates + tuple(
    Template((v0, v1), ref) for ref, v0, v1 in WORDINGS[n])) for n, sk in SKILLS.items()}
N_TEMPLATES = len(SKILLS["add"].templates)
N_VARIANTS = 2
assert all(len(sk.templates) == N_TEMPLATES for sk in SKILLS.values())


def skill_names() -> list[str]:
    """The atomic skills, in a fixed order."""
    return list(SKILLS)


# --------------------------------------------------------------------------- config


@dataclass
class SkillMathConfig:
    """What to generate. Number ranges are small by default so tiny models can learn them."""

    seed: int = 0
    n_train: int = 5000
    n_val: int = 500
    n_test: int = 500
    n_test_template: int = 500  # problems written only with the held-out template
    n_test_pair: int = 500  # chains that contain a held-out skill pair
    skills: list[str] = field(default_factory=skill_names)
    k_weights: list[float] = field(default_factory=lambda: [0.5, 0.3, 0.2])  # P(k=1,2,3)
    min_number: int = 1
    max_number: int = 20
    max_factor: int = 9  # multipliers, divisors, times: 2..max_factor
    max_answer: int = 999  # every intermediate result stays within [0, max_answer]
    templates: list[int] = field(default_factory=lambda: [0, 1, 2])  # allowed template indices
    variants: list[int] = field(default_factory=lambda: [0, 1])  # allowed wording variants
    heldout_template: int = 2  # template index kept out of training; -1 = none
    heldout_pairs: list[str] = field(
        default_factory=lambda: ["add>mul", "sub>div", "div>add", "rate>sub"])
    solution_style: str = "plain"  # plain | columns (add/sub worked column by column) | columns_all

    def __post_init__(self) -> None:
        for n in ("n_train", "n_val", "n_test", "n_test_template", "n_test_pair"):
            check_range(n, getattr(self, n), 0, 10_000_000)
        if not self.skills:
            raise ConfigError(f"config key 'skills' is empty; known skills: {skill_names()}")
        for s in self.skills:
            check_choice("skills", s, skill_names())
        if len(self.k_weights) != 3 or any(w < 0 for w in self.k_weights) or sum(self.k_weights) <= 0:
            raise ConfigError(f"config key 'k_weights' = {self.k_weights!r} must be 3 "
                              "non-negative weights for k = 1, 2, 3 (not all zero)")
        check_range("min_number", self.min_number, 0, 10**6)
        check_range("max_number", self.max_number, 1, 10**6)
        check_order("min_number", self.min_number, "max_number", self.max_number)
        check_range("max_factor", self.max_factor, 2, 1000)
        check_range("max_answer", self.max_answer, 10, 10**9)
        check_order("max_number", self.max_number, "max_answer", self.max_answer)
        for t in self.templates:
            check_choice("templates", t, list(range(N_TEMPLATES)))
        for v in self.variants:
            check_choice("variants", v, list(range(N_VARIANTS)))
        if not self.variants:
            raise ConfigError("config key 'variants' is empty; allowed: [0, 1]")
        check_choice("heldout_template", self.heldout_template, [-1, *range(N_TEMPLATES)])
        check_choice("solution_style", self.solution_style, list(SOLUTION_STYLES))
        if not self.train_templates:
            raise ConfigError(f"config key 'templates' = {self.templates} and config key "
                              f"'heldout_template' = {self.heldout_template} leave no template "
                              "for training")
        for p in self.heldout_pairs:
            a, sep, b = p.partition(">")
            if not sep or a not in SKILLS or b not in SKILLS:
                raise ConfigError(f"config key 'heldout_pairs' item {p!r} must look like 'add>mul' "
                                  f"with skills from {skill_names()}")

    @property
    def train_templates(self) -> list[int]:
        return [t for t in self.templates if t != self.heldout_template]

    @property
    def pairs(self) -> set[tuple[str, str]]:
        return {tuple(p.split(">", 1)) for p in self.heldout_pairs}  # type: ignore[misc]


# --------------------------------------------------------------------------- sampling


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _render_steps(steps: list[Args], variant: int) -> str:
    parts = []
    for i, st in enumerate(steps):
        sk = SKILLS[st["skill"]]
        tpl = sk.templates[st["template"]]
        a = st["args"]
        xt = str(a["x"]) if i == 0 else tpl.ref
        slots = {k: v for k, v in a.items() if k != "rest"}
        slots.update(st.get("fill") or {})
        slots.update(sk.slots(a, xt))
        slots["x"] = xt
        parts.append(_cap(tpl.variants[variant].format(**slots)))
    return " ".join(parts)


_COLUMN_OPS = {"add": "+", "sub": "-"}
_MUL_ARG = {"mul": "b", "rate": "t", "area": "w"}


def _step_line(step: Args, style: str) -> str:
    sk, a = SKILLS[step["skill"]], step["args"]
    name = step["skill"]
    op = _COLUMN_OPS.get(name)
    if style in ("columns", "columns_all") and op:
        return column_line(op, a["x"], a["b"])
    if style == "columns_all":
        if name == "cmp":
            return column_line("-", max(a["x"], a["b"]), min(a["x"], a["b"]))
        if name in _MUL_ARG and a[_MUL_ARG[name]] <= 9:
            f = a[_MUL_ARG[name]]
            return f"{a['x']} * {f}: {mul_work(a['x'], f)}, so {a['x'] * f}"
        if name in ("div", "rem") and a["b"] <= 9:
            r = a["x"] // a["b"] if name == "div" else a["x"] % a["b"]
            sym = "/" if name == "div" else "%"
            return f"{a['x']} {sym} {a['b']}: {div_work(a['x'], a['b'])}, so {r}"
    return sk.line(a, sk.compute(a))


def _solution(steps: list[Args], answer: int, style: str = "plain") -> str:
    lines = [_step_line(st, style) for st in steps]
    lines.append(f"The answer is {answer}.")
    return "\n".join(lines)


def _difficulty(steps: list[Args], answer: int) -> int:
    """k, plus one when any number in the problem has three or more digits (1..4)."""
    nums = [answer]
    for st in steps:
        for v in st["args"].values():
            nums.extend(v if isinstance(v, list) else [v] if isinstance(v, int) else [])
    return len(steps) + (1 if max(nums) >= 100 else 0)


def _sample_chain(rng: random.Random, cfg: SkillMathConfig, chain: Sequence[str],
                  templates: Sequence[int]) -> list[Args] | None:
    steps: list[Args] = []
    x: int | None = None
    for name in chain:
        sk = SKILLS[name]
        for _ in range(8):
            args = sk.sample(rng, x, cfg)
            if args is None:
                continue
            r = sk.compute(args)
            if 0 <= r <= cfg.max_answer and args["x"] <= cfg.max_answer:
                break
        else:
            return None
        t = rng.choice(list(templates))
        step = {"skill": name, "template": t, "args": args}
        fill = draw_fill(rng, sk.templates[t])
        if fill:  # templates 0-2 have no fill slots: their problems draw nothing more
            step["fill"] = fill
        steps.append(step)
        x = r
    return steps


def draw_fill(rng: random.Random, template: Template) -> dict[str, str]:
    """Names, objects and containers for the fill slots ``template`` uses (none: no draws)."""
    return {k: rng.choice(FILLS[k]) for k in template.fills}


def _has_pair(chain: Sequence[str], pairs: set[tuple[str, str]]) -> bool:
    return any((a, b) in pairs for a, b in zip(chain, chain[1:]))


def _draw_chain(rng: random.Random, cfg: SkillMathConfig, k: int, skills: Sequence[str],
                avoid: set[tuple[str, str]], force: set[tuple[str, str]] | None) -> list[str]:
    if force:
        a, b = rng.choice(sorted(force))
        if k == 1:
            k = 2
        pos = rng.randrange(k - 1)
        chain = [rng.choice(list(skills)) for _ in range(k)]
        chain[pos], chain[pos + 1] = a, b
        return chain
    for _ in range(1000):
        chain = [rng.choice(list(skills)) for _ in range(k)]
        if not _has_pair(chain, avoid):
            return chain
    raise ConfigError(f"cannot draw a {k}-skill chain from {list(skills)} avoiding {sorted(avoid)}")


def _make_problem(steps: list[Args], variant: int, pid: str, style: str = "plain") -> Problem:
    answer = SKILLS[steps[-1]["skill"]].compute(steps[-1]["args"])
    return Problem(
        id=pid, question=_render_steps(steps, variant), solution=_solution(steps, answer, style),
        answer=str(answer), skills=[s["skill"] for s in steps],
        source="skillmath", template="+".join(f"{s['skill']}/{s['template']}" for s in steps),
        variant=variant, difficulty=_difficulty(steps, answer), subject=None,
        meta={"steps": steps})


def sample_problems(cfg: SkillMathConfig, n: int, *, seed: int | str, prefix: str = "sm",
                    skills: Sequence[str] | None = None, k: int | Sequence[float] | None = None,
                    templates: Sequence[int] | None = None,
                    avoid_pairs: Iterable[tuple[str, str]] | None = None,
                    force_pairs: Iterable[tuple[str, str]] | None = None,
                    exclude_questions: set[str] | None = None) -> list[Problem]:
    """``n`` distinct problems drawn deterministically from ``seed``.

    ``k``: a fixed number of steps or weights for k = 1, 2, 3 (default ``cfg.k_weights``);
    ``skills``/``templates`` default to the config's training ones; ``avoid_pairs`` (default the
    held-out pairs) never occur as adjacent steps; ``force_pairs`` puts one of them in every
    chain. Questions in ``exclude_questions`` are skipped (and the set is not modified).
    """
    rng = random.Random(f"skillmath:{seed}")
    skills = list(skills or cfg.skills)
    templates = list(templates if templates is not None else cfg.train_templates)
    if not templates:
        raise ConfigError("no templates to sample from")
    weights = [0.0, 0.0, 0.0]
    if isinstance(k, int):
        check_choice("k", k, [1, 2, 3])
        weights[k - 1] = 1.0
    else:
        weights = list(k or cfg.k_weights)
    force = set(force_pairs) if force_pairs else None
    if force:  # a forced pair needs two steps at least
        weights[0] = 0.0
        if sum(weights) == 0:
            weights = [0.0, 1.0, 0.0]
    avoid = cfg.pairs if avoid_pairs is None else set(avoid_pairs)
    seen = set(exclude_questions or ())
    out: list[Problem] = []
    tries = 0
    max_tries = 100 * n + 1000
    while len(out) < n:
        tries += 1
        if tries > max_tries:
            raise ConfigError(f"could only make {len(out)} of {n} distinct problems (seed {seed}); "
                              "widen min_number/max_number/max_factor or ask for fewer")
        kk = rng.choices((1, 2, 3), weights=weights)[0]
        chain = _draw_chain(rng, cfg, kk, skills, set() if force else avoid, force)
        steps = _sample_chain(rng, cfg, chain, templates)
        if steps is None:
            continue
        variant = rng.choice(list(cfg.variants))
        p = _make_problem(steps, variant, f"{prefix}-{len(out):06d}", cfg.solution_style)
        if p.question in seen:
            continue
        seen.add(p.question)
        out.append(p)
    return out


def generate(cfg: SkillMathConfig) -> dict[str, list[Problem]]:
    """All splits: train, val, test, test_template, test_pair (no question in two splits)."""
    out: dict[str, list[Problem]] = {}
    seen: set[str] = set()
    # The test and validation splits are drawn before train, so they do not change when n_train
    # grows, and a skill with few distinct questions keeps its share of held-out problems.
    plan: list[tuple[str, int, dict[str, Any]]] = [
        ("test", cfg.n_test, {}), ("val", cfg.n_val, {}), ("train", cfg.n_train, {}),
        ("test_template", cfg.n_test_template if cfg.heldout_template >= 0 else 0,
         {"templates": [cfg.heldout_template]}),
        ("test_pair", cfg.n_test_pair if cfg.pairs else 0, {"force_pairs": cfg.pairs}),
    ]
    for split, n, kw in plan:
        probs = sample_problems(cfg, n, seed=f"{cfg.seed}:{split}", prefix=f"sm-{split}",
                                exclude_questions=seen, **kw)
        seen.update(p.question for p in probs)
        out[split] = probs
    return {s: out[s] for s in SPLITS}


def render(problem: Problem, variant: int | None = None, template: int | None = None) -> Problem:
    """The same problem (numbers, solution, answer) in another wording variant or template."""
    steps = [dict(s) for s in problem.meta["steps"]]
    if template is not None:
        check_choice("template", template, list(range(N_TEMPLATES)))
        for i, s in enumerate(steps):
            s["template"] = template
            tpl = SKILLS[s["skill"]].templates[template]
            if not set(tpl.fills) <= set(s.get("fill") or {}):
                s["fill"] = draw_fill(random.Random(f"{problem.id}:{i}:{template}"), tpl)
    v = problem.variant if variant is None else variant
    check_choice("variant", v, list(range(N_VARIANTS)))
    return dataclasses.replace(
        problem, question=_render_steps(steps, v), variant=v,
        template="+".join(f"{s['skill']}/{s['template']}" for s in steps),
        meta={**problem.meta, "steps": steps})


# --------------------------------------------------------------------------- training text


def format_prompt(question: str) -> str:
    """The fixed prompt: ``Q: {question}\\nA: ``."""
    return PROMPT_TEMPLATE.format(question=question)


def sft_pairs(problems: Iterable[Problem]) -> list[tuple[str, str]]:
    """(prompt, completion) pairs: prompt ``Q: ...\\nA: ``, completion = the solution."""
    return [(format_prompt(p.question), p.solution) for p in problems]


def pretraining_texts(problems: Iterable[Problem]) -> Iterator[str]:
    """Plain documents ``Q: {question}\\nA: {solution}`` for a pretraining corpus."""
    for p in problems:
        yield format_prompt(p.question) + p.solution
