"""SkillMath's wider wordings (templates 3-8 with drawn names and objects) and the columns_all
solution style (digit-by-digit multiplication, long division)."""

from __future__ import annotations

import re

import pytest

from reasonlab.data.skillmath import (
    N_TEMPLATES, SKILLS, SkillMathConfig, div_work, generate, mul_work, render, sample_problems)
from reasonlab.data.skillmath_wordings import FILLS

SIX = ["add", "sub", "mul", "div", "rem", "cmp"]


def test_every_skill_has_nine_templates_of_two_variants():
    assert N_TEMPLATES == 9
    for sk in SKILLS.values():
        assert len(sk.templates) == 9
        assert all(len(t.variants) == 2 for t in sk.templates)
        assert not any(t.fills for t in sk.templates[:3])  # the original ones draw nothing
        assert sum(bool(t.fills) for t in sk.templates[3:]) >= 2


def test_every_wording_renders_with_fills_from_the_lists():
    cfg = SkillMathConfig(templates=list(range(9)), heldout_template=-1, variants=[0, 1],
                          max_answer=999)
    probs = sample_problems(cfg, 3000, seed=5, k=1)
    seen = set()
    for p in probs:
        st = p.meta["steps"][0]
        seen.add((st["skill"], st["template"], p.variant))
        assert "{" not in p.question and "}" not in p.question, p.question
        text = SKILLS[st["skill"]].templates[st["template"]].variants[p.variant]
        for k, v in (st.get("fill") or {}).items():
            assert v in FILLS[k]
            assert v.lower() in p.question.lower() or "{" + k + "}" not in text
    assert len(seen) == 13 * 9 * 2  # every skill x template x variant occurs


def test_default_config_draws_no_fills_and_template_8_can_be_held_out():
    assert all("fill" not in s for p in sample_problems(SkillMathConfig(), 300, seed=1)
               for s in p.meta["steps"])
    cfg = SkillMathConfig(skills=SIX, templates=list(range(9)), heldout_template=8,
                          n_train=500, n_val=0, n_test=100, n_test_template=100, n_test_pair=50,
                          max_answer=999, solution_style="columns_all")
    sp = generate(cfg)
    tpl = lambda p: {s["template"] for s in p.meta["steps"]}  # noqa: E731
    assert all(8 not in tpl(p) for p in sp["train"])
    assert all(tpl(p) == {8} for p in sp["test_template"])
    assert len({t for p in sp["train"] for t in tpl(p)}) == 8


def test_render_into_a_new_template_is_deterministic():
    p = sample_problems(SkillMathConfig(), 1, seed=2, k=2)[0]
    a, b = render(p, template=5), render(p, template=5)
    assert a.question == b.question and a.solution == p.solution and a.answer == p.answer
    assert all(s.get("fill") for s in a.meta["steps"] if SKILLS[s["skill"]].templates[5].fills)


@pytest.mark.parametrize("b", range(1, 10))
def test_mul_and_div_work_match_exact_arithmetic(b):
    for x in range(0, 1000, 7):
        cols = mul_work(x, b).split(", ")
        assert len(cols) == len(str(x))
        digits, carry = [], 0
        for col, d in zip(cols, str(x)[::-1]):
            m = re.fullmatch(r"(\d) \* (\d)(?: \+ (\d+))? = (\d+)", col)
            assert m and int(m[1]) == int(d) and int(m[2]) == b
            assert int(m[3] or 0) == carry and int(m[4]) == int(d) * b + carry
            digits.append(int(m[4]) % 10)
            carry = int(m[4]) // 10
        assert int(str(carry) + "".join(map(str, digits[::-1]))) == x * b
        steps = [re.fullmatch(r"(\d+) / (\d) = (\d+) r (\d)", s)
                 for s in div_work(x, b).split(", ")]
        assert all(steps)
        q = int("".join(s[3] for s in steps))
        assert q == x // b and int(steps[-1][4]) == x % b
        for s in steps:
            assert int(s[1]) // b == int(s[3]) and int(s[1]) % b == int(s[4])


def test_columns_all_lines_end_in_the_step_result():
    cfg = SkillMathConfig(skills=SIX, templates=list(range(9)), max_answer=999,
                          solution_style="columns_all")
    plain = sample_problems(SkillMathConfig(skills=SIX, templates=list(range(9)),
                                            max_answer=999), 400, seed=4)
    cols = sample_problems(cfg, 400, seed=4)
    worked = 0
    for p, c in zip(plain, cols):
        assert (p.question, p.answer) == (c.question, c.answer)
        for pl, cl in zip(p.solution.split("\n")[:-1], c.solution.split("\n")[:-1]):
            r = pl.rsplit(" = ", 1)[1]
            assert cl.endswith(f"so {r}") and ": " in cl
            worked += 1
    assert worked > 600
    with pytest.raises(ValueError):
        div_work(10, 0)
