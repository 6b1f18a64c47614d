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
