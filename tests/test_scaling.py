"""IsoFLOP fits: recover a known exponent from synthetic sweeps; the runner's wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reasonlab.device import torch_threads
from reasonlab.config import ConfigError, load_config
from reasonlab.llama import scaling as S


def synthetic_sweep(alpha=0.5, A=0.3, budgets=(1e12, 1e13, 1e14, 1e15), n_sizes=5, curvature=0.4,
                    noise=0.0, seed=0):
    """Losses L(N; C) = L*(C) + k·(log10 N − log10 N*(C))² with N*(C) = A·C^α."""
    rng = np.random.default_rng(seed)
    pts = []
    for c in budgets:
        n_star = A * c ** alpha
        for off in np.linspace(-0.8, 0.8, n_sizes) + rng.uniform(-0.1, 0.1):
            n = n_star * 10 ** off
            loss = 2.0 - 0.1 * math.log10(c) + curvature * (off ** 2) + noise * rng.normal()
            pts.append({"budget": c, "n_params": n, "val_loss": loss})
    return pts


def test_recovers_known_alpha_exactly_without_noise():
    fits, law, _ = S.fit_scaling(synthetic_sweep(alpha=0.5, A=0.3))
    assert abs(law.alpha - 0.5) < 1e-9
    assert abs(law.A - 0.3) / 0.3 < 1e-6
    assert law.r2 > 1 - 1e-9
    assert all(f.interior and abs(f.parabola.r2 - 1) < 1e-9 for f in fits)
    assert abs(law.tokens(1e16) - 1e16 / (6 * 0.3 * 1e8)) / law.tokens(1e16) < 1e-6


@pytest.mark.parametrize("alpha", [0.35, 0.53, 0.7])
def test_recovers_alpha_under_noise(alpha):
    fits, law, _ = S.fit_scaling(synthetic_sweep(alpha=alpha, noise=0.01, seed=3))
    assert abs(law.alpha - alpha) < 0.03
    assert law.r2 > 0.98
    assert len(fits) == 4


def test_parabola_and_power_law_edges():
    p = S.fit_parabola([0, 1, 2], [3.0, 2.0, 3.0])
    assert abs(p.x_min - 1.0) < 1e-12 and abs(p.y_min - 2.0) < 1e-12 and p.convex
    with pytest.raises(ValueError, match="at least 3"):
        S.fit_parabola([0, 1], [1, 2])
    with pytest.raises(ValueError, match="not convex"):
        S.fit_isoflop(1e12, [1e5, 1e6, 1e7], [2.0, 3.0, 2.0])
    f = S.fit_isoflop(1e12, [1e5, 1e6, 1e7], [2.0, 2.5, 3.5])  # minimum left of the sizes
    assert not f.interior and f.n_opt < 1e5
    law = S.fit_power_law([1e10, 1e12], [1e3, 1e4])
    assert abs(law.alpha - 0.5) < 1e-12 and abs(float(law(1e14)) - 1e5) / 1e5 < 1e-9
    with pytest.raises(ValueError, match="positive"):
        S.fit_power_law([1e10, -1], [1, 2])
    assert S.flops(1e6, 2e7) == 1.2e14 and S.tokens_for_budget(1.2e14, 1e6) == 2e7


def test_plot_is_written(tmp_path):
    fits, law, _ = S.fit_scaling(synthetic_sweep())
    path = S.plot_isoflops(fits, law, tmp_path / "iso.png", predict_budget=1e17)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_config_validation_and_plan():
    cfg = S.ScalingConfig(budgets=[1e12, 1e13], sizes=["tiny-0.5m", "tiny-1m", "tiny-2m"],
                          seq_len=64, batch_size=8, min_steps=10)
    with pytest.raises(ConfigError, match="budgets"):
        S.ScalingConfig(budgets=[1e12])
    with pytest.raises(ConfigError, match="sizes"):
        S.ScalingConfig(sizes=["tiny-0.5m", "tiny-1m", "tiny-3m"])
    with pytest.raises(ConfigError, match="param_count"):
        S.ScalingConfig(param_count="embedding")
    plan = S.plan_sweep(cfg, 512)
    assert len(plan) == 6
    small = plan[0]
    n_total = S.size_params("tiny-0.5m", 512, "total")
    assert small["n_params"] == n_total - 2 * 512 * 112  # untied input + output embeddings
    assert small["steps"] == round(1e12 / (6 * small["n_params"]) / 512)
    assert small["tokens"] == small["steps"] * 512
    big = [p for p in plan if p["budget"] == 1e12 and p["size"] == "tiny-2m"][0]
    assert big["skip"] == (big["steps"] < 10)


def test_quick_preset_loads():
    from pathlib import Path

    cfg = load_config(S.ScalingConfig, Path(__file__).parents[1] / "configs" / "scaling_quick.yaml")
    assert len(cfg.budgets) >= 3 and len(cfg.sizes) >= 4


def test_runner_wiring_recovers_alpha_with_a_fake_trainer(tmp_path, monkeypatch):
    """run_scaling with ``pretrain`` replaced by a known loss law: the runner's bookkeeping
    (budgets → tokens → steps, N, resume, fit, plot, results) reproduces the law's exponent."""
    import reasonlab.llama.pretrain as P

    alpha, A = 0.5, 2.0
    calls = []

    def fake_pretrain(pcfg, tokenizer, train, val, out_dir):
        n = S.size_params(pcfg.preset, len(tokenizer), "non_embedding")
        tokens = pcfg.max_steps * pcfg.seq_len * pcfg.batch_size
        c = S.flops(n, tokens)
        loss = 3.0 + 0.5 * (math.log10(n) - math.log10(A * c ** alpha)) ** 2
        calls.append(pcfg.preset)
        return {"val_loss": loss, "train_tokens": tokens, "n_params": n + 1,
                "n_params_non_embedding": n}

    monkeypatch.setattr(P, "pretrain", fake_pretrain)
    sizes = ["tiny-0.5m", "tiny-2m", "tiny-5m", "tiny-10m", "tiny-20m"]
    # Budgets whose optimum N* = A·C^0.5 falls inside the sizes (0.5M–21M non-embedding).
    cfg = S.ScalingConfig(budgets=[4e11, 2e12, 1e13, 5e13], sizes=sizes, n_train_docs=200,
                          n_val_docs=20, vocab_size=300, seq_len=32, batch_size=4, min_steps=1,
                          predict_budget=1e16, threads=0)
    res = S.run_scaling(cfg, tmp_path / "sweep")
    assert abs(res["alpha"] - alpha) < 0.02 and res["r2"] > 0.99
    assert abs(res["alpha_tokens"] - (1 - res["alpha"])) < 1e-12
    assert set(res) >= {"alpha", "r2", "budgets", "sizes", "optimal", "prediction", "machine"}
    assert (tmp_path / "sweep" / "isoflops.png").exists()
    pred = res["prediction"]["n_opt"]
    assert abs(math.log10(pred) - math.log10(A * 1e16 ** alpha)) < 0.1
    # A second call resumes every finished run instead of training again.
    n_calls = len(calls)
    S.run_scaling(cfg, tmp_path / "sweep")
    assert len(calls) == n_calls


def test_non_convex_budget_is_left_out_when_not_strict():
    pts = synthetic_sweep(budgets=(1e12, 1e13, 1e14))
    pts += [{"budget": 1e15, "n_params": n, "val_loss": v}
            for n, v in ((1e5, 2.0), (1e6, 3.0), (1e7, 2.0))]
    with pytest.raises(ValueError, match="not convex"):
        S.fit_scaling(pts)
    fits, law, excluded = S.fit_scaling(pts, strict=False)
    assert [f.budget for f in fits] == [1e12, 1e13, 1e14]
    assert excluded[0]["budget"] == 1e15 and "not convex" in excluded[0]["reason"]
    assert abs(law.alpha - 0.5) < 1e-9


def test_micro_shapes_are_presets_that_follow_the_herd_rules():
    from reasonlab.llama.configs import ffn_hidden_dim, known_presets, peak_lr, preset

    n = [S.size_params(s, 512, "non_embedding") for s in ("micro-0.06m", "micro-0.1m", "micro-0.25m",
                                                          "tiny-0.5m")]
    assert n == sorted(n) and 50_000 < n[0] < 80_000 and 200_000 < n[2] < 300_000
    assert 15_000 < S.size_params("micro-0.015m", 512, "non_embedding") < 20_000
    cfg = preset("micro-0.1m", vocab_size=300, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_key_value_heads) == (64, 2, 1)
    assert cfg.intermediate_size == ffn_hidden_dim(64, 1.3, 16) and cfg.vocab_size == 300
    assert cfg.rms_norm_eps == 1e-5 and cfg.rope_parameters["rope_theta"] == 500_000.0
    assert not cfg.tie_word_embeddings and cfg.pad_token_id == 3
    assert peak_lr("micro-0.1m") == 3e-3 and peak_lr("tiny-5m") == 2e-3
    assert "micro-0.015m" in known_presets() and "micro-0.015m" in S.known_sizes()
    S.ScalingConfig(sizes=["micro-0.1m", "micro-0.25m", "tiny-0.5m"])  # valid sizes


def test_micro_size_trains_through_pretrain(tmp_path):
    """A micro size is a preset: the real pretraining loop builds and trains it."""
    from reasonlab.llama.pretrain import PretrainConfig, pretrain
    from reasonlab.llama.tokenizer import train_tokenizer

    texts = [f"Q: What is {a} + {b}?\nA: {a} + {b} = {a + b}\nThe answer is {a + b}."
             for a in range(12) for b in range(12)]
    tok = train_tokenizer(texts, vocab_size=300)
    cfg = PretrainConfig(preset="micro-0.06m", seq_len=32, batch_size=8, max_steps=30,
                         warmup_steps=3, eval_every=30, eval_batches=4, checkpoint_every=30,
                         distributed="none", device="cpu")
    with torch_threads(1):  # tiny models: one thread is fastest on a shared CPU
        res = pretrain(cfg, tok, texts[:120], texts[120:], tmp_path / "run")
    assert res["n_params_non_embedding"] == S.size_params("micro-0.06m", len(tok), "non_embedding")
    assert res["val_loss"] < 0.8 * math.log(len(tok))  # learned something beyond uniform


def test_require_interior_drops_extrapolated_minima():
    pts = synthetic_sweep(budgets=(1e12, 1e13, 1e14))
    # A fourth budget measured only on sizes far right of its optimum: the minimum is extrapolated.
    pts += [{"budget": 1e15, "n_params": n, "val_loss": 1.0 + 0.4 * (math.log10(n) - 7.0) ** 2}
            for n in (1e9, 3e9, 1e10)]
    fits, law, excluded = S.fit_scaling(pts, require_interior=True)
    assert len(fits) == 4 and [e["budget"] for e in excluded] == [1e15]
    assert "outside the sizes" in excluded[0]["reason"]
    assert abs(law.alpha - 0.5) < 1e-9
    with pytest.raises(ValueError, match="usable minimum"):
        S.fit_scaling([p for p in pts if p["budget"] >= 1e14], require_interior=True)


def test_cli_scaling_command(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import reasonlab.llama.pretrain as P
    from reasonlab.cli import app

    def fake_pretrain(pcfg, tokenizer, train, val, out_dir):
        n = S.size_params(pcfg.preset, len(tokenizer), "non_embedding")
        tokens = pcfg.max_steps * pcfg.seq_len * pcfg.batch_size
        loss = 3.0 + 0.5 * (math.log10(n) - math.log10(2.0 * S.flops(n, tokens) ** 0.5)) ** 2
        return {"val_loss": loss, "train_tokens": tokens, "n_params": n, "n_params_non_embedding": n}

    monkeypatch.setattr(P, "pretrain", fake_pretrain)
    sets = ["budgets=[4e11,2e12,1e13]", "sizes=[tiny-0.5m,tiny-2m,tiny-5m,tiny-10m,tiny-20m]",
            "n_train_docs=100", "n_val_docs=10", "vocab_size=300", "seq_len=32", "batch_size=4",
            "min_steps=1", "threads=0"]
    args = ["scaling", "--out", str(tmp_path / "s")]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "alpha = 0.5" in res.output and (tmp_path / "s" / "results.json").exists()
    bad = CliRunner().invoke(app, ["scaling", "--out", str(tmp_path / "t"), "--set", "param_count=x"])
    assert bad.exit_code == 2 and "param_count" in bad.output


# --------------------------------------------------------------------------- intervals, forecast

def test_sigmoid_recovers_known_curve():
    true = S.Sigmoid(k=4.0, x0=1.2)
    x = np.linspace(0.4, 2.2, 15)
    sig = S.fit_sigmoid(x, true(x), 200)  # exact fractions: the MLE is the curve itself
    assert abs(sig.k - 4.0) < 1e-4 and abs(sig.x0 - 1.2) < 1e-5
    rng = np.random.default_rng(0)
    acc = rng.binomial(400, true(x)) / 400
    noisy = S.fit_sigmoid(x, acc, 400)
    assert abs(noisy.k - 4.0) < 0.6 and abs(noisy.x0 - 1.2) < 0.05
    assert float(noisy(0.0)) > 0.95 and float(noisy(3.0)) < 0.05


def test_sigmoid_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        S.fit_sigmoid([1.0], [0.5])
    with pytest.raises(ValueError, match="not identified"):
        S.fit_sigmoid([1.0, 2.0], [0.0, 0.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.fit_sigmoid([1.0, 2.0], [0.5, 1.5])
    with pytest.raises(ValueError, match="distinct"):
        S.fit_sigmoid([1.0, 1.0], [0.2, 0.5])


def test_loss_power_law_and_prediction_interval():
    cs = np.logspace(10, 12, 5)
    law = S.fit_power_law(cs, 30.0 * cs ** -0.1)  # a falling law: L*(C) = 30·C^-0.1
    assert abs(law.alpha + 0.1) < 1e-12 and abs(law.A - 30.0) / 30 < 1e-9
    rng = np.random.default_rng(1)
    y = 30.0 * cs ** -0.1 * 10 ** rng.normal(0, 0.005, cs.size)
    noisy = S.fit_power_law(cs, y)
    value, se, dof = S.predict_power_law(noisy, cs, y, 1e13)
    assert dof == 3 and se > 0
    # the new-observation standard error grows with the distance from the data
    _, se_near, _ = S.predict_power_law(noisy, cs, y, 1e11)
    assert se > se_near
    assert abs(math.log10(value) - math.log10(30.0 * 1e13 ** -0.1)) < 4 * se


def test_bootstrap_interval_covers_the_true_exponent():
    covered, widths = 0, []
    for seed in range(12):  # a 95% interval: covers the truth in (nearly) every noisy sweep
        pts = synthetic_sweep(alpha=0.45, noise=0.01, seed=seed, budgets=(1e11, 3e11, 1e12, 3e12, 1e13))
        boot = S.bootstrap_isoflop(pts, n_boot=200, seed=0, predict_at=1e14)
        lo, hi = S.ci95(boot["alpha"])
        covered += lo < 0.45 < hi
        widths.append(hi - lo)
    assert covered >= 9 and max(widths) < 0.1
    assert boot["alpha"].size > 150 and boot["n_opt"].size == boot["alpha"].size
    # without noise every draw is the exact fit
    exact = S.bootstrap_isoflop(synthetic_sweep(alpha=0.45), n_boot=20)
    assert np.allclose(exact["alpha"], 0.45)
    assert S.ci95([]) is None


def test_two_stage_forecast_recovers_both_stages(tmp_path):
    """NLL(C) = 8·C^-0.08 over compute-optimal models and accuracy = sigmoid(NLL): the
    forecast at a larger budget lands on the truth and its interval covers it."""
    true_sig = S.Sigmoid(k=6.0, x0=1.0)
    cs = np.logspace(10, 11.5, 4)
    nll_opt = 8.0 * cs ** -0.08
    rng = np.random.default_rng(2)
    model_nll = np.concatenate([nll_opt * f for f in (1.0, 1.05, 1.1)])
    n = 300
    acc = rng.binomial(n, true_sig(model_nll)) / n
    at = 10 ** 12
    nll_law, sig, fc = S.two_stage_forecast(cs, nll_opt, model_nll, acc, n, at, n_boot=400)
    truth_nll = 8.0 * at ** -0.08
    assert abs(nll_law.alpha + 0.08) < 1e-9 and abs(fc.nll - truth_nll) < 1e-9
    assert abs(sig.x0 - 1.0) < 0.05
    lo, hi = fc.accuracy_ci95
    assert lo <= float(true_sig(truth_nll)) <= hi and 0 < hi - lo < 0.3
    assert abs(fc.accuracy - float(true_sig(truth_nll))) < 0.05
    path = S.plot_forecast(cs, nll_opt, nll_law, model_nll, acc, sig, fc, tmp_path / "fc.png",
                           measured_nll=truth_nll, measured_accuracy=0.5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="accuracies"):
        S.two_stage_forecast(cs, nll_opt, model_nll, acc[:3], n, at)


def test_forecast_config_validation():
    with pytest.raises(ConfigError, match="max_steps"):
        S.ScalingConfig(min_steps=50, max_steps=10)
    with pytest.raises(ConfigError, match="eval_problems"):
        S.ScalingConfig(corpus="gsm8k", eval_problems=50)
    with pytest.raises(ConfigError, match="skillmath_docs"):
        S.ScalingConfig(corpus="skillmath", skillmath_docs=10)
    with pytest.raises(ConfigError, match="heldout"):
        S.ScalingConfig(budgets=[1e12, 1e13], heldout=True)
    cfg = S.ScalingConfig(budgets=[1e12, 1e13], sizes=["tiny-0.5m", "tiny-1m", "tiny-2m"],
                          seq_len=64, batch_size=8, min_steps=10, max_steps=100)
    plan = S.plan_sweep(cfg, 512)
    assert all(p["skip"] == (p["steps"] < 10 or p["steps"] > 100) for p in plan)
    assert any(p["skip"] and p["steps"] > 100 for p in plan)


def test_answer_eval_on_a_micro_model():
    """The answer NLL is the reference solution's mean token NLL; accuracy is graded."""
    from reasonlab.data.skillmath import SkillMathConfig, sample_problems
    from reasonlab.lm.local import LocalLM
    from reasonlab.llama.configs import preset
    from reasonlab.llama.tokenizer import train_tokenizer
    from transformers import LlamaForCausalLM

    import torch

    probs = sample_problems(SkillMathConfig(k_weights=[1.0, 0.0, 0.0]), 6, seed=1)
    texts = [f"Q: {p.question}\nA: {p.solution}" for p in probs] * 5
    tok = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    model = LlamaForCausalLM(preset("micro-0.008m", vocab_size=len(tok))).eval()
    lm = LocalLM(model, tok, device="cpu")
    res = S.answer_eval(lm, probs, max_new_tokens=8, batch_size=4)
    assert res["n_problems"] == 6 and 0 <= res["accuracy"] <= 1
    # an untrained model: NLL near log(vocab)
    assert abs(res["answer_nll"] - math.log(len(tok))) < 1.5
    scored = lm.score([f"Q: {probs[0].question}\nA: "], [probs[0].solution])[0]
    one = S.answer_eval(lm, probs[:1], max_new_tokens=4)
    assert abs(one["answer_nll"] - (-scored.total / scored.num_tokens)) < 1e-5


def test_runner_heldout_forecast_with_fake_trainer_and_eval(tmp_path, monkeypatch):
    """The held-out check end to end with a known loss law, answer NLL and accuracy: the
    forecast of the largest budget (fitted on the others) matches what its runs 'measure'."""
    import reasonlab.llama.pretrain as P
    import reasonlab.lm.load as L

    alpha, A = 0.5, 2.0
    true_sig = S.Sigmoid(k=5.0, x0=1.0)

    def law(n, c):
        return 3.0 * (c / 1e12) ** -0.05 + 0.5 * (math.log10(n) - math.log10(A * c ** alpha)) ** 2

    def fake_pretrain(pcfg, tokenizer, train, val, out_dir):
        n = S.size_params(pcfg.preset, len(tokenizer), "non_embedding")
        tokens = pcfg.max_steps * pcfg.seq_len * pcfg.batch_size
        return {"val_loss": law(n, S.flops(n, tokens)), "train_tokens": tokens, "n_params": n + 1,
                "n_params_non_embedding": n, "model_dir": "model"}

    def fake_eval(lm, problems, **kw):
        nll = lm / 2.0  # the answer NLL tracks the validation loss
        return {"answer_nll": nll, "accuracy": float(true_sig(nll)), "n_problems": len(problems),
                "n_correct": 0, "answer_tokens": 1}

    # load_lm hands the fake evaluation the run's loss (read back from its results.json)
    def fake_load(path, **kw):
        from reasonlab.runs import read_json

        return read_json(Path(path).parent / "results.json")["val_loss"]

    from pathlib import Path

    monkeypatch.setattr(P, "pretrain", fake_pretrain)
    monkeypatch.setattr(L, "load_lm", fake_load)
    monkeypatch.setattr(S, "answer_eval", fake_eval)
    sizes = ["tiny-0.5m", "tiny-2m", "tiny-5m", "tiny-10m", "tiny-20m"]
    cfg = S.ScalingConfig(budgets=[4e11, 1e12, 2.5e12, 6e12, 1.5e13], sizes=sizes,
                          corpus="skillmath", n_train_docs=200, n_val_docs=20, vocab_size=300,
                          seq_len=32, batch_size=4, min_steps=1, eval_problems=20, heldout=True,
                          n_boot=100, threads=0, loss_forecast="power_law")
    res = S.run_scaling(cfg, tmp_path / "sweep")
    h = res["heldout"]
    # this world's law is a parabola in log N around N*(C) (the power-law forecast's own
    # assumption), so that forecast is the headline; the envelope is reported beside it
    assert h["loss_method"] == "power_law" and h["loss_predicted"] == h["power_law"]["loss_predicted"]
    assert h["envelope"]["size"] in sizes and "loss_rel_error" in h["envelope"]
    assert [r["budget"] for r in h["backtest"]] == [2.5e12, 6e12]
    assert all(r["power_law_rel_error"] < 0.02 for r in h["backtest"])
    assert h["budget"] == 1.5e13 and h["fit_budgets"] == [4e11, 1e12, 2.5e12, 6e12]
    assert abs(h["alpha"] - alpha) < 0.03 and h["alpha_ci95"][0] <= h["alpha"] <= h["alpha_ci95"][1]
    assert h["loss_rel_error"] < 0.02
    assert abs(h["forecast"]["nll"] - h["nll_measured"]) / h["nll_measured"] < 0.03
    lo, hi = h["forecast"]["accuracy_ci95"]
    assert lo <= h["forecast"]["accuracy"] <= hi
    assert h["accuracy_in_ci95"] is True
    assert res["alpha_ci95"] and res["n_eval_problems"] == 20
    assert (tmp_path / "sweep" / "forecast.png").exists()
    assert all("accuracy" in p and "answer_nll" in p for p in res["points"])


def _envelope_points(budgets, sizes):
    """Runs whose loss is an exact power law in tokens per size: L_N(D) = a_N·D^(−b_N)."""
    pts = []
    for c in budgets:
        for name, (n, a, b) in sizes.items():
            d = c / (6 * n)
            pts.append({"budget": c, "size": name, "n_params": n, "tokens": d, "flops": c,
                        "val_loss": a * d ** -b})
    return pts


def test_envelope_forecast_is_the_lowest_per_size_curve():
    sizes = {"s": (1e4, 9.0, 0.08), "m": (4e4, 14.0, 0.11), "l": (1.6e5, 30.0, 0.16)}
    pts = _envelope_points([1e10, 3e10, 1e11, 3e11], sizes)
    for c in (1e12, 1e13):
        want = {k: a * (c / (6 * n)) ** -b for k, (n, a, b) in sizes.items()}
        fc = S.envelope_forecast(pts, c)
        assert fc.size == min(want, key=want.get)
        assert fc.value == pytest.approx(min(want.values()), rel=1e-9)
        assert fc.per_size["l"]["exponent"] == pytest.approx(-0.16)
        assert fc.ci95[0] <= fc.value <= fc.ci95[1] + 1e-9
    with pytest.raises(ValueError, match="no size has 3 runs"):
        S.envelope_forecast([p for p in pts if p["budget"] < 3e10], 1e12)


def test_envelope_interval_widens_with_noise_and_covers_the_truth():
    rng = np.random.default_rng(0)
    sizes = {"s": (1e4, 9.0, 0.08), "m": (4e4, 14.0, 0.11), "l": (1.6e5, 30.0, 0.16)}
    pts = _envelope_points([1e10, 2e10, 4e10, 8e10, 1.6e11], sizes)
    for p in pts:
        p["val_loss"] *= math.exp(0.01 * rng.normal())
    fc = S.envelope_forecast(pts, 6.4e11)
    truth = min(a * (6.4e11 / (6 * n)) ** -b for n, a, b in sizes.values())
    assert fc.ci95[0] < truth < fc.ci95[1]
    assert 0.005 < (fc.ci95[1] - fc.ci95[0]) / truth < 0.2


def test_loss_forecast_choice_is_checked():
    with pytest.raises(ConfigError, match="loss_forecast.*spline"):
        S.ScalingConfig(loss_forecast="spline")


def test_train_budget_trains_the_sizes_at_one_more_budget(tmp_path, monkeypatch):
    """A forecast check beyond the sweep: one new budget, the sizes within the step bounds, points
    of the sweep's form; a second call reads them back instead of training again."""
    import reasonlab.llama.pretrain as P

    calls = []

    def fake_pretrain(pcfg, tokenizer, train, val, out_dir):
        calls.append(pcfg.preset)
        tokens = pcfg.max_steps * pcfg.seq_len * pcfg.batch_size
        n = S.size_params(pcfg.preset, len(tokenizer), "non_embedding")
        return {"val_loss": 10.0 / math.log(tokens) + n * 1e-8, "train_tokens": tokens,
                "n_params": n + 1, "n_params_non_embedding": n, "model_dir": "model"}

    monkeypatch.setattr(P, "pretrain", fake_pretrain)
    cfg = S.ScalingConfig(budgets=[1e11, 1e12], sizes=["tiny-0.5m", "tiny-2m", "tiny-5m"],
                          corpus="skillmath", n_train_docs=100, n_val_docs=10, vocab_size=300,
                          seq_len=32, batch_size=4, min_steps=100, threads=0)
    pts = S.train_budget(cfg, tmp_path / "check", 3e12)
    plan = {p["size"]: p for p in S.plan_sweep(cfg, 300, [3e12])}
    assert [p["size"] for p in pts] == [s for s in cfg.sizes if not plan[s]["skip"]] == calls
    assert all(p["budget"] == 3e12 and p["steps"] == plan[p["size"]]["steps"] for p in pts)
    assert S.train_budget(cfg, tmp_path / "check", 3e12) == pts and len(calls) == len(pts)
