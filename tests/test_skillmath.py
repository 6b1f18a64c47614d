"""SkillMath: determinism, correct arithmetic, held-out splits, helpers and the CLI."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from reasonlab.config import ConfigError, load_config
from reasonlab.data.skillmath import (
    SKILLS, SkillMathConfig, format_prompt, generate, pretraining_texts, read_problems, render,
    sample_problems, sft_pairs, skill_names, write_splits)

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


@pytest.mark.parametrize("key,value", [
    ("skills", "add,teleport"), ("heldout_pairs", "add-mul"), ("max_factor", 1),
    ("k_weights", "1,1"), ("heldout_template", 5), ("templates", "2"),
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
