"""Statistical creativity: synthetic creators, the evaluators, E0 and its bound, the runner."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest

from reasonlab.config import ConfigError, load_config
from reasonlab.evals import creativity as C
from reasonlab.evals.creators import (
    FORMS,
    SLOTS,
    CreatorModel,
    MixtureModel,
    condition_prompt,
    sample_creators,
)


@pytest.fixture(scope="module")
def creators():
    return sample_creators(6, seed=0)


# -- creators: exact probabilities -----------------------------------------------------------------
def _all_lines(creator):
    for template in creator.templates:
        choices = [list(creator.weights[s]) if s in SLOTS else [s] for s in template]
        for words in itertools.product(*choices):
            yield " ".join(words) + "."


def test_one_line_works_sum_to_the_probability_of_one_line(creators):
    for c in creators:
        total = sum(math.exp(c.logprob(line)) for line in _all_lines(c))
        assert total == pytest.approx(c.line_probs[0], rel=1e-9)


def test_line_entropy_equals_enumeration_and_entropy_matches_samples(creators):
    c = creators[0]
    probs = [math.exp(c.logprob(line)) / c.line_probs[0] for line in _all_lines(c)]
    assert c.line_entropy() == pytest.approx(-sum(p * math.log(p) for p in probs), rel=1e-9)
    rng = random.Random(1)
    works = c.sample_many(4000, rng)
    lps = np.array([c.logprob(w) for w in works])
    assert np.isfinite(lps).all()
    # Monte Carlo entropy within 4 standard errors of the exact one
    assert abs(-lps.mean() - c.entropy()) < 4 * lps.std() / math.sqrt(len(lps))


def test_foreign_strings_have_zero_probability(creators):
    c = creators[0]
    other_theme = next(t for t in ("sea", "forest", "city", "sky") if t != c.theme)
    assert c.logprob("hello world.") == -math.inf
    assert c.logprob(c.sample(random.Random(0)).rstrip(".")) == -math.inf
    from reasonlab.evals.creators import THEMES
    template = next(t for t in c.templates)
    words = [THEMES[other_theme][s][0] if s in ("N", "V") else
             (next(iter(c.weights[s])) if s in SLOTS else s) for s in template]
    assert c.logprob(" ".join(words) + ".") == -math.inf
    assert c.bio.startswith(f"{c.mood} {c.theme} {c.form}") and c.favorite in c.bio
    assert set(FORMS) >= {c.form for c in creators}


def test_creators_are_seeded():
    a, b = sample_creators(3, seed=5), sample_creators(3, seed=5)
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
    assert [x.to_dict() for x in a] != [x.to_dict() for x in sample_creators(3, seed=6)]
    with pytest.raises(ValueError, match="number of creators"):
        sample_creators(0, seed=0)


# -- E0 and the concentration bound ------------------------------------------------------------------
def test_bound_shrinks_as_one_over_sqrt_n():
    b = [C.concentration_bound(n, eta=0.05, value_range=1.0) for n in (4, 16, 64, 256)]
    for small, large in zip(b, b[1:]):
        assert large == pytest.approx(small / 2, rel=1e-12)
    assert b[0] == pytest.approx(math.sqrt(math.log(20) / 8), rel=1e-12)
    with pytest.raises(ValueError, match="eta"):
        C.concentration_bound(4, eta=1.5)


def test_bound_holds_with_probability_one_minus_eta_on_a_synthetic_case():
    # κ of creators c ~ D: Beta(2, 5) values in [0, 1] (true mean 2/7); E0 over n sampled creators
    rng = np.random.default_rng(0)
    eta, true_mean = 0.1, 2 / 7
    slacks = {}
    for n in (8, 32, 128):
        trials = rng.beta(2, 5, size=(2000, n))
        ests = [C.estimate_e0(t, eta=eta, value_range=1.0) for t in trials[:200]]
        misses = np.mean(trials.mean(axis=1) + ests[0].slack < true_mean)
        assert misses <= eta
        assert all(e.in_range and e.upper == pytest.approx(e.e0 + e.slack) for e in ests)
        # the gap between E0 and the truth also shrinks like 1/sqrt(n)
        slacks[n] = (ests[0].slack, np.abs(trials.mean(axis=1) - true_mean).mean())
    assert slacks[32][0] == pytest.approx(slacks[8][0] / 2)
    assert slacks[128][1] < slacks[32][1] < slacks[8][1]
    assert slacks[128][1] * math.sqrt(128) == pytest.approx(slacks[8][1] * math.sqrt(8), rel=0.2)


# -- evaluator (a): KL -------------------------------------------------------------------------------
def test_kl_estimator_is_unbiased_on_a_known_pair():
    strings = ["ab", "abc", "b"]
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.3, 0.5])
    exact = float((p * np.log(p / q)).sum()) / float((p * np.array([3, 4, 2])).sum())
    rng = np.random.default_rng(0)
    idx = rng.choice(3, size=200_000, p=p)
    est = C.kl_per_char(np.log(q[idx]).tolist(), np.log(p[idx]).tolist(),
                        [len(strings[i]) for i in idx])
    assert est == pytest.approx(exact, rel=0.03)


def test_the_true_distribution_scores_kl_zero_and_ignoring_the_condition_scores_worse(creators):
    scores = C.score_creators(CreatorModel(creators), creators, condition_prompt,
                              evaluators=("kl",), works=64, seed=0)
    assert all(s.kl == pytest.approx(0.0, abs=1e-12) for s in scores)
    blind = C.score_creators(MixtureModel(creators), creators, condition_prompt,
                             evaluators=("kl",), works=64, seed=0)
    assert min(s.kl for s in blind) > 0.01
    e0 = C.e0_by_evaluator(blind)["kl"]
    assert e0.e0 > 0.03 and e0.in_range and e0.n == len(creators)


# -- evaluator (b): discriminator two-sample test --------------------------------------------------
def test_discriminator_is_at_chance_for_the_true_distribution_and_above_it_otherwise(creators):
    true_ = C.score_creators(CreatorModel(creators[:1]), creators[:1], condition_prompt,
                             evaluators=("discriminator",), samples=150, seed=3)
    blind = C.score_creators(MixtureModel(creators), creators[:1], condition_prompt,
                             evaluators=("discriminator",), samples=150, seed=3)
    for s in true_:
        lo, hi = s.discriminator_ci95
        assert lo <= 0.5 <= hi and abs(s.discriminator - 0.5) < 0.08
    for s in blind:
        assert s.discriminator_ci95[0] > 0.6


def test_wilson_interval_matches_the_formula():
    lo, hi = C.wilson_interval(80, 100)
    assert (lo, hi) == pytest.approx((0.7111, 0.8666), abs=1e-4)


# -- evaluator (c): MAUVE over sentence embeddings ------------------------------------------------------
def test_mauve_divergence_is_small_for_one_distribution_and_large_for_two():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(100, 8)), rng.normal(size=(100, 8))
    shifted = rng.normal(size=(100, 8)) + np.array([3.0] + [0.0] * 7)
    assert C.mauve_divergence(a, b, num_buckets=5) < 0.1
    assert C.mauve_divergence(a, shifted, num_buckets=5) > 0.5


@pytest.mark.slow  # loads the sentence encoder (tens of seconds on a loaded 2-core machine)
def test_mauve_over_minilm_embeddings_separates_the_blind_model(creators):
    c = creators[0]
    rng = random.Random(0)
    a, b = c.sample_many(60, rng), c.sample_many(60, rng)
    blind = MixtureModel(creators).generate([""] * 60, seed=1)
    fa, fb, fblind = C.embed_texts(a), C.embed_texts(b), C.embed_texts([g.text for g in blind])
    assert fa.shape == (60, 384)
    assert np.allclose(np.linalg.norm(fa, axis=1), 1.0, atol=1e-5)
    same, other = C.mauve_divergence(fa, fb), C.mauve_divergence(fa, fblind)
    assert same < 0.1 and other > 0.3


def test_evaluator_agreement_is_rank_correlation():
    agree = C.evaluator_agreement({"kl": [0.1, 0.2, 0.3, 0.4], "mauve": [0.2, 0.5, 0.6, 0.9],
                                   "discriminator": [0.9, 0.8, 0.7, 0.6]})
    assert agree["kl~mauve"] == pytest.approx(1.0)
    assert agree["discriminator~kl"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same number"):
        C.evaluator_agreement({"kl": [1, 2, 3], "mauve": [1, 2]})


def test_unknown_evaluator_is_refused(creators):
    with pytest.raises(ValueError, match="unknown evaluator 'bleu'"):
        C.score_creators(CreatorModel(creators), creators, condition_prompt, evaluators=("bleu",))


# -- the runner and the command --------------------------------------------------------------------------
MICRO = ["ns=[2]", "total_works=64", "unseen_creators=2", "eval_works=8", "evaluators=[kl]",
         "dim=16", "n_layers=1", "n_heads=2", "n_kv_heads=1", "max_steps=6", "batch_size=4",
         "warmup_steps=1"]


def test_config_names_the_bad_key():
    from reasonlab.evals.creativity_runner import CreativityConfig

    with pytest.raises(ConfigError, match="modes\\[0\\]"):
        load_config(CreativityConfig, None, ["modes=[joint]"])
    with pytest.raises(ConfigError, match="'ns\\[1\\]' = 9999"):
        load_config(CreativityConfig, None, ["ns=[2,9999]", "total_works=4096"])
    with pytest.raises(ConfigError, match="n_heads"):
        load_config(CreativityConfig, None, ["dim=30", "n_heads=4"])


def test_char_tokenizer_gives_one_token_per_character():
    from reasonlab.evals.creativity_runner import char_tokenizer

    tok = char_tokenizer()
    work = "the cold tide drifts. gold oak sways."
    assert len(tok(work, add_special_tokens=False)["input_ids"]) == len(work)


def test_both_modes_see_the_same_works_per_row():
    from reasonlab.evals.creativity_runner import char_tokenizer, pack_works, training_pairs
    from reasonlab.llama.packing import loss_targets
    from reasonlab.llama.sft import pair_document

    tok = char_tokenizer()
    cs = sample_creators(3, seed=0)
    packed = {}
    for mode in ("conditional", "marginal"):
        pairs = training_pairs(cs, 30, mode, seed=4)
        docs = [pair_document(tok, p, w) for p, w in pairs]
        packed[mode] = (pairs, pack_works(docs, 3, 448, tok.pad_token_id))
    (pc, rc), (pm, rm) = packed["conditional"], packed["marginal"]
    assert [w for _, w in pc] == [w for _, w in pm]
    assert {p for p, _ in pm} == {""} and all(p.endswith("\n") for p, _ in pc)
    for rows in (rc, rm):
        assert len(rows) == 10
        assert all(set(r[r >= 0].tolist()) == {0, 1, 2} for r in rows.doc_ids)
        # targets: each work's characters and its end, never the biography
        _, mask = loss_targets(rows)
        assert int(mask.sum()) == sum(len(w) + 1 for _, w in pc)
    with pytest.raises(ValueError, match="more than seq_len=50"):
        pack_works([pair_document(tok, p, w) for p, w in pc], 3, 50, tok.pad_token_id)


def test_micro_run_writes_results_and_resumes(tmp_path):
    import torch

    from reasonlab.evals.creativity_runner import CreativityConfig, run_creativity

    torch.set_num_threads(1)
    cfg = load_config(CreativityConfig, None, MICRO)
    out = run_creativity(cfg, tmp_path / "run")
    assert [(r["n"], r["mode"]) for r in out["rows"]] == [(2, "conditional"), (2, "marginal")]
    for r in out["results"]:
        assert r["steps"] == 6 and len(r["heldout"]["per_creator"]) == 2
        assert r["unseen"]["e0"]["kl"]["n"] == 2 and r["heldout"]["e0"]["kl"]["e0"] > 0
    assert (tmp_path / "run" / "e0_vs_n.png").stat().st_size > 0
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["rows"] == out["rows"]
    again = run_creativity(cfg, tmp_path / "run")  # finished sub-runs are read, not retrained
    assert again["rows"] == out["rows"]


def test_cli_runs_and_reports_bad_keys(tmp_path):
    from typer.testing import CliRunner

    from reasonlab.cli import app

    runner = CliRunner()
    args = ["creativity", "--out", str(tmp_path / "r")]
    for s in MICRO:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "heldout_kl" in res.output and "marginal" in res.output
    bad = runner.invoke(app, ["creativity", "--out", str(tmp_path / "b"), "--set", "eta=2"])
    assert bad.exit_code == 2 and "eta" in bad.output
