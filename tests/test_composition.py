"""The composition law: per-skill and per-pair success from model outputs, the fitted exponent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reasonlab.data.skillmath import SkillMathConfig, sample_problems
from reasonlab.evals.accuracy import score_problem
from reasonlab.evals.composition import (
    CompositionConfig, analyze, exponent, fit_exponent, k_accuracy, pair_table, pearson,
    per_skill_accuracy, run_composition)


def _outputs():
    """Hand-made model outputs on real SkillMath problems: right for every add problem and the
    first of each mul problem pair, wrong ('The answer is 0.' when the answer is not 0, or no
    answer at all) for the rest."""
    cfg = SkillMathConfig(skills=["add", "sub", "mul"], heldout_pairs=[], max_number=20)
    probs = sample_problems(cfg, 60, seed=11, k=1) + sample_problems(cfg, 60, seed=12, k=2)
    recs, want = [], {}
    for i, p in enumerate(probs):
        right = p.skills[0] == "add" or (p.skills[0] == "mul" and i % 2 == 0)
        text = (p.solution if right else
                ("The answer is 1000." if i % 3 else "I do not know"))
        recs.append(score_problem(p, [text], "answer_is"))
        if len(p.skills) == 1:
            want.setdefault(p.skills[0], []).append(right)
    return probs, recs, want


def test_per_skill_accuracy_of_hand_made_outputs():
    probs, recs, want = _outputs()
    got = per_skill_accuracy(recs)
    assert set(got) == {"add", "sub", "mul"}
    for s, hits in want.items():
        assert got[s] == (sum(hits) / len(hits), len(hits))
    assert got["add"][0] == 1.0 and got["sub"][0] == 0.0 and 0 < got["mul"][0] < 1
    acc1, n1 = k_accuracy(recs, 1)
    assert n1 == 60 and acc1 == pytest.approx(sum(sum(h) for h in want.values()) / 60)


def test_pair_table_predicts_with_the_product_of_skill_successes():
    recs = ([{"skills": ["a"], "correct": [c]} for c in (1, 1, 1, 0)]
            + [{"skills": ["b"], "correct": [c]} for c in (1, 0)]
            + [{"skills": ["a", "b"], "correct": [c]} for c in (1, 0, 0)]
            + [{"skills": ["b", "a"], "correct": [c]} for c in (1, 1)]
            + [{"skills": ["a", "a", "b"], "correct": [True]}])
    rows = {r["pair"]: r for r in pair_table(recs, min_n=2)}
    assert rows["a>b"]["predicted"] == pytest.approx(0.75 * 0.5)
    assert rows["a>b"]["y"] == pytest.approx(1 / 3) and rows["a>b"]["n"] == 3
    assert rows["b>a"]["y"] == 1.0
    assert "a>b" in {r["pair"] for r in pair_table(recs, min_n=3)}
    assert "b>a" not in {r["pair"] for r in pair_table(recs, min_n=3)}


def test_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.random(20), rng.random(20)
    assert pearson(list(x), list(y)) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert pearson([1, 2], [3, 4]) is None and pearson([1, 1, 1], [1, 2, 3]) is None


def test_exponent_recovers_a_known_law():
    xs = [0.2, 0.5, 0.8, 0.95]
    assert exponent(xs, [x ** 2 for x in xs]) == pytest.approx(2.0)
    assert exponent(xs, [x ** 3.5 for x in xs]) == pytest.approx(3.5)
    # per-problem successes whose rates follow Y = X^2 exactly (n = 400 each)
    models = []
    for x in (0.3, 0.5, 0.7, 0.9):
        n1, n2 = 400, 400
        ones = [1.0] * round(x * n1) + [0.0] * (n1 - round(x * n1))
        twos = [1.0] * round(x * x * n2) + [0.0] * (n2 - round(x * x * n2))
        models.append((ones, twos))
    fit = fit_exponent(models, n_boot=300, seed=0)
    assert fit["exponent"] == pytest.approx(2.0, abs=0.02)
    lo, hi = fit["ci95"]
    assert lo < 2.0 < hi and hi - lo < 0.8
    assert fit_exponent([], n_boot=10)["exponent"] is None


def test_run_composition_on_model_folders(tmp_path):
    _, recs, _ = _outputs()
    specs = []
    for name, keep in (("weak", 2), ("strong", 1)):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text("{}")
        with open(d / "eval_predictions.jsonl", "w") as f:
            for i, r in enumerate(recs):
                r = dict(r, correct=[bool(r["correct"][0]) and i % keep == 0])
                f.write(json.dumps({"set": "test_k1" if len(r["skills"]) == 1 else "test_k2", **r})
                        + "\n")
        specs.append(str(d))
    res = run_composition(CompositionConfig(models=specs, n_boot=50), tmp_path / "out")
    assert (tmp_path / "out" / "pairs.png").stat().st_size > 1000
    assert (tmp_path / "out" / "herd.png").is_file()
    assert "composition exponent" in (tmp_path / "out" / "composition_table.txt").read_text()
    m = res["models"][specs[1]]
    assert m["per_skill"]["add"] == 1.0 and m["per_skill"]["sub"] == 0.0
    assert res["models"][specs[0]]["X"] < m["X"]
    assert res["composition_exponent"] is not None
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["composition_exponent"] == pytest.approx(res["composition_exponent"])
    direct = analyze({"x": recs}, n_boot=0)
    assert direct["models"]["x"]["per_skill"] == {s: a for s, (a, _) in per_skill_accuracy(recs).items()}
