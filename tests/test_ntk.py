"""NTKEval: zero learning gives a zero kernel, one cell equals the formula on a model whose
probabilities are computed by hand, the base weights come back bit for bit, the statistics."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reasonlab.config import ConfigError
from reasonlab.evals import ntk
from reasonlab.evals.ntk import NTKConfig
from reasonlab.lm.local import LocalLM

from conftest import build_tiny_model


def _cfg(**kw):
    base = dict(skills=["add", "sub"], wordings=[0, 1], n_eval=3, n_train=4, k=2,
                max_new_tokens=6, ft_steps=2, ft_batch=4, bootstrap=50, max_number=9,
                solution_style="plain", batch_size=16)
    base.update(kw)
    return NTKConfig(**base)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_zero_fine_tuning_steps_give_a_zero_kernel(tiny_tokenizer, mode):
    lm = LocalLM(build_tiny_model(tiny_tokenizer, seed=1), tiny_tokenizer, device="cpu")
    cfg = _cfg(methods=["ft"], ft_steps=0, ft_mode=mode)
    conds = ntk.load_conditions(cfg, 0)
    measured = ntk.compute_kernels(lm, cfg, conds, progress=False)
    kernels, _ = ntk.summarize_kernels(measured, cfg, conds)
    for m in ntk.MEASURES:
        v = np.asarray(kernels["ft"][m]["value"])
        assert v.shape == (4, 4)
        assert np.all(v == 0.0), m
    # the base values are real numbers, not zeros: the zero is the difference
    assert all(0 < p < 1 for p in measured["base"]["add/t0"]["token_prob"])


class Unigram(torch.nn.Module):
    """p(next token) = softmax(bias) whatever the context: every probability by hand."""

    def __init__(self, vocab: int):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 1)
        self.emb.weight.requires_grad_(False)
        g = torch.Generator().manual_seed(0)
        self.bias = torch.nn.Parameter(torch.randn(vocab, generator=g, dtype=torch.float64))

    def get_input_embeddings(self):
        return self.emb

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=False,
                inputs_embeds=None, **kw):
        b, t = input_ids.shape
        return SimpleNamespace(logits=self.bias.expand(b, t, -1))


def test_one_cell_equals_the_formula_on_a_unigram_model(tiny_tokenizer):
    vocab = len(tiny_tokenizer)
    lm = LocalLM(Unigram(vocab), tiny_tokenizer, device="cpu")
    lr = 0.7
    cfg = _cfg(wordings=[0], methods=["ft"], k=0, ft_steps=1, ft_optimizer="sgd", ft_lr=lr,
               ft_batch=4)
    conds = ntk.load_conditions(cfg, 0)
    b0 = lm.model.bias.detach().clone()
    measured = ntk.compute_kernels(lm, cfg, conds, progress=False)
    kernels, _ = ntk.summarize_kernels(measured, cfg, conds)
    assert torch.equal(lm.model.bias, b0)  # restored

    # by hand: one SGD step on the mean per-token NLL of the add solutions
    # (gradient of a row: softmax(b) - its token frequencies), then the mean change of
    # exp(mean log p) of the sub solutions
    p0 = torch.softmax(b0, 0)
    freq = torch.zeros(vocab, dtype=torch.float64)
    for prob in conds[0].train:
        toks = lm.encode(prob.solution, add_special_tokens=False)
        freq += torch.bincount(torch.tensor(toks), minlength=vocab).double() / len(toks)
    b1 = b0 - lr * (p0 - freq / len(conds[0].train))
    lp0, lp1 = torch.log_softmax(b0, 0), torch.log_softmax(b1, 0)
    deltas = []
    for prob in conds[1].eval:
        toks = lm.score([ntk.qa_prompt(prob.question)], [prob.solution])[0].token_ids
        deltas.append(math.exp(float(lp1[toks].mean())) - math.exp(float(lp0[toks].mean())))
    want = sum(deltas) / len(deltas)
    got = kernels["ft"]["token_prob"]["value"][0][1]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert abs(want) > 1e-4  # the step moved the cell
    # the sequence log-probability cell likewise
    want_lp = np.mean([float(lp1[t].sum() - lp0[t].sum()) for t in
                       (lm.score([ntk.qa_prompt(p.question)], [p.solution])[0].token_ids
                        for p in conds[1].eval)])
    assert kernels["ft"]["logprob"]["value"][0][1] == pytest.approx(want_lp, rel=1e-9)


def test_base_weights_bit_identical_after_a_full_kernel_run(tiny_tokenizer, tmp_path):
    model = build_tiny_model(tiny_tokenizer, seed=2)
    before = _state(model)
    lm = LocalLM(model, tiny_tokenizer, device="cpu")
    res_full = ntk.run_ntkeval(_cfg(ft_lr=1e-2), tmp_path / "full", lm=lm, progress=False)
    res_lora = ntk.run_ntkeval(_cfg(ft_lr=1e-2, ft_mode="lora", methods=["ft"]),
                               tmp_path / "lora", lm=lm, progress=False)
    after = _state(lm.model)
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in lm.model.parameters())
    # learning did happen in between: the kernels are not zero
    for res in (res_full, res_lora):
        assert np.abs(np.asarray(res["kernels"]["ft"]["logprob"]["value"])).max() > 1e-5
    assert (tmp_path / "full" / "kernels.png").stat().st_size > 0
    k = res_full["kernels"]["icl"]["token_prob"]
    assert len(k["ci95"]) == 4 and all(lo <= hi for row in k["ci95"] for lo, hi in row)
    assert "structure_minus_format" in k and "diag_minus_offdiag" in k
    # a rerun resumes from measures.jsonl: same numbers, no model measured again
    again = ntk.run_ntkeval(_cfg(ft_lr=1e-2), tmp_path / "full", lm=lm, progress=False)
    assert again["kernels"] == res_full["kernels"]


def test_contrasts_and_intervals():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(3, 3, 10))
    w = ntk.diag_weights(3)
    assert w.sum() == pytest.approx(0.0)
    v, reps = ntk.contrast(d, w, n_boot=200, seed=1)
    means = d.mean(-1)
    want = np.trace(means) / 3 - (means.sum() - np.trace(means)) / 6
    assert v == pytest.approx(want)
    lo, hi = ntk.interval(reps)
    assert lo < v < hi
    conds = [("add", 0), ("add", 1), ("sub", 0), ("sub", 1)]
    sw = ntk.structure_weights(conds)
    m = np.arange(16.0).reshape(4, 4)
    # same skill, other wording: (0,1) (1,0) (2,3) (3,2); other skill, same wording:
    # (0,2) (2,0) (1,3) (3,1)
    want = (1 + 4 + 11 + 14) / 4 - (2 + 8 + 7 + 13) / 4
    assert float((sw * m).sum()) == pytest.approx(want)


def test_samples_needed():
    assert ntk.samples_needed([1.0] * 20, truth_sign=1) == 1
    assert ntk.samples_needed([0.0] * 20, truth_sign=1) is None
    x = np.r_[np.ones(28), -np.ones(12)]  # mean 0.4, sd 0.92: about (1.645 * 2.3)^2 = 14
    n = ntk.samples_needed(x, truth_sign=1, seed=0)
    assert n is not None and 8 <= n <= 22
    assert ntk.samples_needed(np.r_[np.ones(39), -np.ones(1)], truth_sign=1) < n
    assert ntk.samples_needed(x, truth_sign=-1) is None  # the wrong sign is never confirmed


def test_reasoning_of():
    assert ntk.reasoning_of("3 + 4 = 7\nThe answer is 7.") == "3 + 4 = 7\n"
    assert ntk.reasoning_of("3 + 4 = 7") == "3 + 4 = 7\n"
    assert ntk.reasoning_of("The answer is 7.\nQ: next") == ""


@pytest.mark.parametrize("kw, key", [({"ft_mode": "qlora"}, "ft_mode"), ({"k": -1}, "'k'"),
                                     ({"skills": ["add", "fly"]}, "skills"),
                                     ({"wordings": [0, 0]}, "wordings"),
                                     ({"n_shots": 9, "n_train": 4}, "n_shots")])
def test_bad_config_names_the_key(kw, key):
    with pytest.raises(ConfigError, match=key):
        NTKConfig(**kw)


def test_cli_writes_the_kernels(tiny_tokenizer, tmp_path):
    from typer.testing import CliRunner

    from reasonlab.cli import app

    folder = tmp_path / "model"
    build_tiny_model(tiny_tokenizer, seed=3).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    out = tmp_path / "run"
    args = ["ntkeval", "-o", str(out), "-s", f"model={folder}", "-s", "skills=[add,sub]",
            "-s", "wordings=[0]", "-s", "n_eval=2", "-s", "n_train=2", "-s", "k=0",
            "-s", "ft_steps=1", "-s", "max_number=9", "-s", "solution_style=plain"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "diag-offdiag" in r.output and (out / "results.json").exists()
    bad = CliRunner().invoke(app, ["ntkeval", "-o", str(tmp_path / "x"), "-s", "ft_steps=-1"])
    assert bad.exit_code == 2 and "ft_steps" in bad.output
