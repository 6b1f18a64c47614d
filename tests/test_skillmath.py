"""SkillMath: determinism, correct arithmetic, held-out splits, helpers and the CLI."""

from __future__ import annotations

import random
import re

import pytest
from typer.testing import CliRunner

from reasonlab.config import ConfigError, load_config
from reasonlab.data.skillmath import (
    SKILLS, SkillMathConfig, column_line, column_work, format_prompt, generate, pretraining_texts,
    read_problems, render, sample_problems, sft_pairs, skill_names, write_splits)

SMALL = dict(n_train=600, n_val=100, n_test=100, n_test_template=100, n_test_pair=100)


@pytest.fixture(scope="module")
def splits():
    return generate(SkillMathConfig(**SMALL))


def _eval_line(line: str) -> tuple[int, int]:
    lhs, rhs = line.rsplit(" = ", 1)
    assert re.fullmatch(r"[0-9+\-*/%() ]+", lhs), line
    return eval(lhs.replace("/", "//")), int(rhs)  # noqa: S307 - digits and operators only


def test_skill_inventory():
    names = skill_names()
    assert 12 <= len(names) <= 16
    for s in SKILLS.values():
        assert len(s.templates) >= 3
        assert all(len(t.variants) >= 2 for t in s.templates)


def test_same_seed_byte_identical_jsonl(tmp_path):
    cfg = SkillMathConfig(**SMALL, seed=7)
    a = write_splits(generate(cfg), tmp_path / "a.jsonl")[0].read_bytes()
    b = write_splits(generate(SkillMathConfig(**SMALL, seed=7)), tmp_path / "b.jsonl")[0].read_bytes()
    c = write_splits(generate(SkillMathConfig(**SMALL, seed=8)), tmp_path / "c.jsonl")[0].read_bytes()
    assert a == b
    assert a != c
    assert a.count(b"\n") == sum(SMALL.values())


def test_solutions_are_correct_and_chained(splits):
    for probs in splits.values():
        for p in probs:
            lines = p.solution.split("\n")
            assert lines[-1] == f"The answer is {p.answer}."
            assert len(lines) == len(p.skills) + 1
            results = []
            for line in lines[:-1]:
                got, want = _eval_line(line)
                assert got == want, (p.id, line)
                results.append(want)
            assert str(results[-1]) == p.answer
            assert int(p.answer) >= 0
            steps = p.meta["steps"]
            for prev, r, nxt in zip(steps, results, steps[1:]):
                assert nxt["args"]["x"] == r  # one result feeds the next step
            assert p.difficulty in range(len(p.skills), len(p.skills) + 2)


def test_heldout_templates_and_pairs_never_in_training(splits):
    cfg = SkillMathConfig(**SMALL)
    pairs = cfg.pairs
    assert pairs
    questions: dict[str, str] = {}
    for split, probs in splits.items():
        assert len(probs) == SMALL[f"n_{split}"]
        for p in probs:
            assert questions.setdefault(p.question, split) == split  # no question in two splits
            tpls = [s["template"] for s in p.meta["steps"]]
            adj = set(zip(p.skills, p.skills[1:]))
            if split in ("train", "val", "test"):
                assert cfg.heldout_template not in tpls
                assert not adj & pairs
            elif split == "test_template":
                assert set(tpls) == {cfg.heldout_template}
                assert not adj & pairs
            else:
                assert adj & pairs and cfg.heldout_template not in tpls
    train = splits["train"]
    assert set(s for p in train for s in p.skills) == set(skill_names())
    assert {len(p.skills) for p in train} == {1, 2, 3}


def test_problems_are_short(splits):
    one = [len(p.question) for p in splits["train"] if len(p.skills) == 1]
    assert sum(one) / len(one) < 80
    assert max(len(p.question) for ps in splits.values() for p in ps) < 260
    terse = sample_problems(SkillMathConfig(templates=[0], heldout_template=-1), 200, seed=1, k=1)
    assert max(len(p.question) for p in terse) < 75


def test_render_variants_keep_the_math(splits):
    for p in splits["train"][:50]:
        q = render(p, variant=1 - p.variant)
        assert q.question != p.question
        assert (q.solution, q.answer, q.skills) == (p.solution, p.answer, p.skills)
        assert render(q, variant=p.variant).question == p.question
        assert render(p, template=2).template.endswith("/2")


def test_sample_problems_one_skill_and_k():
    cfg = SkillMathConfig()
    probs = sample_problems(cfg, 100, seed="x", skills=["div"], k=1)
    assert len({p.question for p in probs}) == 100
    assert all(p.skills == ["div"] for p in probs)
    two = sample_problems(cfg, 50, seed="x", skills=["mul", "add"], k=2, avoid_pairs=[])
    assert all(len(p.skills) == 2 for p in two)


def test_training_text_helpers(splits):
    p = splits["train"][0]
    (prompt, completion), = sft_pairs([p])
    assert prompt == f"Q: {p.question}\nA: " == format_prompt(p.question)
    assert completion == p.solution
    assert next(pretraining_texts([p])) == prompt + completion


def test_column_work_is_correct_long_arithmetic():
    assert column_work("+", 47, 38) == "7 + 8 = 15, 4 + 3 + 1 = 8"
    assert column_work("-", 105, 17) == "15 - 7 = 8, 10 - 1 - 1 = 8, 1 - 0 - 1 = 0"
    assert column_line("+", 47, 38) == "47 + 38: 7 + 8 = 15, 4 + 3 + 1 = 8, so 85"
    rng = random.Random(0)
    for _ in range(2000):
        x, b = rng.randint(0, 9999), rng.randint(0, 9999)
        op = rng.choice("+-")
        if op == "-" and b > x:
            x, b = b, x
        digits, carry = [], 0
        for col in column_work(op, x, b).split(", "):
            lhs, r = _eval_line(col)  # every column is a true one-digit fact
            assert lhs == r
            terms = [int(t) for t in re.findall(r"\d+", col.split(" = ")[0])]
            assert (len(terms) == 3) == bool(carry)  # the carry/borrow is written where it is taken
            digits.append(r % 10)
            carry = r // 10 if op == "+" else int(terms[0] >= 10)
        value = int("".join(map(str, digits[::-1]))) + (carry * 10 ** len(digits) if op == "+" else 0)
        assert value == (x + b if op == "+" else x - b)
    with pytest.raises(ValueError, match="0 <= b <= x"):
        column_work("-", 3, 5)


def test_columns_style_changes_only_the_add_sub_lines():
    plain = sample_problems(SkillMathConfig(), 300, seed=3)
    cols = sample_problems(SkillMathConfig(solution_style="columns"), 300, seed=3)
    n_cols = 0
    for p, c in zip(plain, cols):
        assert (c.question, c.answer, c.skills) == (p.question, p.answer, p.skills)
        for skill, pl, cl in zip(p.skills, p.solution.split("\n"), c.solution.split("\n")):
            if skill in ("add", "sub"):
                lhs, r = _eval_line(pl)
                assert cl.startswith(pl.split(" = ")[0] + ": ") and cl.endswith(f", so {r}")
                n_cols += 1
            else:
                assert cl == pl
    assert n_cols > 50


@pytest.mark.parametrize("key,value", [
    ("skills", "add,teleport"), ("heldout_pairs", "add-mul"), ("max_factor", 1),
    ("k_weights", "1,1"), ("heldout_template", 9), ("templates", "2"), ("solution_style", "latex"),
])
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ConfigError, match=key.split("_")[0]):
        load_config(SkillMathConfig, None, [f"{key}={value}"])


def test_cli_writes_identical_files(tmp_path):
    from reasonlab.cli import app

    runner = CliRunner()
    outs = []
    for name in ("a", "b"):
        r = runner.invoke(app, ["data", "skillmath", "--out", str(tmp_path / name),
                                "--set", "n_train=40", "--set", "n_val=5", "--set", "n_test=5",
                                "--set", "n_test_template=5", "--set", "n_test_pair=5"])
        assert r.exit_code == 0, r.output
        outs.append((tmp_path / name / "train.jsonl").read_bytes())
    assert outs[0] == outs[1]
    probs = read_problems(tmp_path / "a" / "train.jsonl")
    assert len(probs) == 40 and probs[0].id == "sm-train-000000"
    r = runner.invoke(app, ["data", "skillmath", "--out", str(tmp_path / "c"), "--set", "n_val=-1"])
    assert r.exit_code == 2 and "n_val" in r.output


@pytest.mark.parametrize("name", ["default", "tiny", "quick"])
def test_shipped_configs_load(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / f"skillmath_{name}.yaml"
    cfg = load_config(SkillMathConfig, path, ["n_train=50", "n_val=5", "n_test=5",
                                              "n_test_template=5", "n_test_pair=5"])
    splits = generate(cfg)
    assert len(splits["train"]) == 50
    assert all(cfg.heldout_template not in [s["template"] for s in p.meta["steps"]]
               for p in splits["train"])
