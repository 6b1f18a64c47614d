"""The DPO family: equality with TRL's DPOTrainer loss, masking, and a few real training steps."""

from __future__ import annotations

import copy
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from reasonlab.device import torch_threads
from reasonlab.config import ConfigError, load_config
from reasonlab.training.dpo import (
    DPOConfig,
    EncodedPair,
    PreferencePair,
    collate_pairs,
    dpo_loss,
    masked_sequence_logps,
    nll_loss,
    pair_logps,
    preference_loss,
    train_dpo,
)

try:  # TRL is only needed for the comparison tests; the rest of the file runs without it
    import trl.trainer.dpo_trainer as trl_dpo
except ImportError:
    trl_dpo = None

# The comparison calls TRL's private ``DPOTrainer._compute_loss`` and fused LM head, whose
# signatures are those of the TRL range pinned in pyproject's dev extra.
needs_trl = pytest.mark.skipif(
    trl_dpo is None or not hasattr(trl_dpo.DPOTrainer, "_compute_loss"),
    reason="needs TRL with DPOTrainer._compute_loss (the range pinned in the dev extra)")

# --------------------------------------------------------------------------------------------
# TRL's loss, called on small tensors
# --------------------------------------------------------------------------------------------
# TRL >= 1.x folds the loss into ``DPOTrainer._compute_loss(model, inputs, return_outputs)``; it
# needs a model patched with TRL's fused LM head (``outputs.log_probs`` etc.). We call the method
# unbound with a stub ``self`` that holds the attributes it reads, and a stub model that returns
# given per-token log-probs (zero where the label is -100, as TRL's fused head does).


class _Accel:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x

    @staticmethod
    def gather(x):
        return x

    @staticmethod
    def unwrap_model(m):
        return m


def _trl_self(loss_types, loss_weights, beta, label_smoothing=0.0):
    return SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_Accel(), aux_loss_enabled=False,
        ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=list(loss_types), loss_weights=list(loss_weights), beta=beta,
        label_smoothing=label_smoothing, use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1, args=SimpleNamespace(gradient_checkpointing_kwargs=None),
    )


class _StubModel:
    """Returns ``per_token`` (2B, T-1) as TRL's fused-head ``log_probs``, zeroed off the labels."""

    def __init__(self, per_token):
        self.per_token = per_token

    def __call__(self, *, labels, fused_lm_head, **kwargs):
        assert fused_lm_head
        mask = labels[:, 1:] != -100
        lp = torch.where(mask, self.per_token, torch.zeros_like(self.per_token))
        return SimpleNamespace(log_probs=lp, entropy=torch.zeros_like(lp),
                               mean_logits=torch.zeros_like(lp), is_top1=torch.zeros_like(lp).bool())


def _trl_loss(per_token, completion_mask, ref_c, ref_r, loss_types, loss_weights=None, beta=0.1,
              label_smoothing=0.0):
    n, t = completion_mask.shape
    inputs = {
        "input_ids": torch.arange(n * t).reshape(n, t) % 50,
        "attention_mask": torch.ones(n, t, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_c, "ref_rejected_logps": ref_r,
    }
    weights = loss_weights or [1.0] * len(loss_types)
    stub = _trl_self(loss_types, weights, beta, label_smoothing)
    return trl_dpo.DPOTrainer._compute_loss(stub, _StubModel(per_token), inputs, False)


def _random_case(seed=0, b=4, t=9):
    g = torch.Generator().manual_seed(seed)
    per_token = -torch.rand(2 * b, t - 1, generator=g, dtype=torch.float64) * 3
    completion = torch.zeros(2 * b, t, dtype=torch.long)
    for i in range(2 * b):
        start = int(torch.randint(1, 4, (1,), generator=g))
        end = int(torch.randint(start + 1, t + 1, (1,), generator=g))
        completion[i, start:end] = 1
    ref_c = -torch.rand(b, generator=g, dtype=torch.float64) * 10
    ref_r = -torch.rand(b, generator=g, dtype=torch.float64) * 10
    return per_token, completion, ref_c, ref_r


def _ours(per_token, completion, ref_c, ref_r, **kw):
    mask = completion[:, 1:].bool()
    sums = torch.where(mask, per_token, torch.zeros_like(per_token)).sum(-1)
    counts = mask.sum(-1)
    c, r = sums.chunk(2)
    cl, rl = counts.chunk(2)
    return preference_loss(c, r, ref_c, ref_r, chosen_lengths=cl, rejected_lengths=rl, **kw)


@needs_trl
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_sigmoid_matches_trl(beta):
    case = _random_case(1)
    ours = _ours(*case, beta=beta, loss_type="sigmoid")
    theirs = _trl_loss(*case, ["sigmoid"], beta=beta)
    assert abs(float(ours.loss) - float(theirs)) < 1e-6
    assert float(ours.loss) > 0.1  # a real value, not a degenerate zero


@needs_trl
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_matches_trl_per_token_average(beta):
    case = _random_case(2)
    ours = _ours(*case, beta=beta, loss_type="ipo")
    theirs = _trl_loss(*case, ["ipo"], beta=beta)
    assert abs(float(ours.loss) - float(theirs)) < 1e-6
    # Without the per-token average the value differs: the normalisation is really applied.
    pt, comp, rc, rr = case
    mask = comp[:, 1:].bool()
    sums = torch.where(mask, pt, torch.zeros_like(pt)).sum(-1)
    c, r = sums.chunk(2)
    unnorm = dpo_loss(c, r, rc, rr, beta=beta, loss_type="ipo")[0].mean()
    assert abs(float(unnorm) - float(theirs)) > 1e-3


@needs_trl
def test_sigmoid_plus_nll_matches_trl_sft_term():
    case = _random_case(3)
    ours = _ours(*case, beta=0.1, loss_type="sigmoid", nll_weight=0.2)
    theirs = _trl_loss(*case, ["sigmoid", "sft"], [1.0, 0.2], beta=0.1)
    assert abs(float(ours.loss) - float(theirs)) < 1e-6
    sft_only = _trl_loss(*case, ["sft"], beta=0.1)
    assert abs(float(ours.nll) - float(sft_only)) < 1e-6


@needs_trl
def test_cdpo_per_pair_epsilon_matches_trl_formula():
    # TRL 1.16's "sigmoid" has no label smoothing; its "aot" loss applies the cDPO formula
    # -(1-ε)logσ(βΔ) - ε logσ(-βΔ) to batch-sorted log-ratios. With one pair per call the sort is
    # the identity, so calling it pair by pair with each pair's ε gives TRL's cDPO per pair.
    per_token, comp, rc, rr = _random_case(4, b=4)
    eps = torch.tensor([0.0, 0.1, 0.3, 0.5], dtype=torch.float64)
    ours = _ours(per_token, comp, rc, rr, beta=0.1, loss_type="sigmoid", label_smoothing=eps)
    b = 4
    for i in range(b):
        rows = [i, b + i]
        theirs = _trl_loss(per_token[rows], comp[rows], rc[i:i + 1], rr[i:i + 1], ["aot"],
                           beta=0.1, label_smoothing=float(eps[i]))
        assert abs(float(ours.losses[i]) - float(theirs)) < 1e-6
    # ε = 0 row equals plain sigmoid DPO; a float ε equals a constant tensor.
    plain = _ours(per_token, comp, rc, rr, beta=0.1, loss_type="sigmoid")
    assert abs(float(ours.losses[0]) - float(plain.losses[0])) < 1e-12
    const = _ours(per_token, comp, rc, rr, beta=0.1, label_smoothing=0.3)
    const_t = _ours(per_token, comp, rc, rr, beta=0.1, label_smoothing=torch.full((4,), 0.3,
                                                                                 dtype=torch.float64))
    assert torch.allclose(const.losses, const_t.losses)
    # ε = 0.5 makes the loss symmetric in Δ: swapping chosen and rejected leaves it unchanged.
    half = dpo_loss(torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]),
                    torch.tensor([-4.0]), label_smoothing=0.5)[0]
    swapped = dpo_loss(torch.tensor([-5.0]), torch.tensor([-3.0]), torch.tensor([-4.0]),
                       torch.tensor([-4.0]), label_smoothing=0.5)[0]
    assert torch.allclose(half, swapped)


def test_rewards_and_errors():
    losses, cr, rr = dpo_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0]),
                              torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0]), beta=0.5)
    assert torch.allclose(cr, torch.tensor([0.5, 0.0]))
    assert torch.allclose(rr, torch.tensor([-0.5, 0.5]))
    # -logσ(0.5 * 2) = log(1 + e^-1)
    assert abs(float(losses[0]) - float(torch.log1p(torch.exp(torch.tensor(-1.0))))) < 1e-6
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(*(torch.zeros(2),) * 4, loss_type="hinge")
    with pytest.raises(ValueError, match=r"\[0, 0.5\]"):
        dpo_loss(*(torch.zeros(2),) * 4, label_smoothing=torch.tensor([0.1, 0.7]))
    with pytest.raises(ValueError, match="sigmoid"):
        dpo_loss(*(torch.zeros(2),) * 4, loss_type="ipo", label_smoothing=0.1)
    assert abs(float(nll_loss(torch.tensor([-4.0, -2.0]), torch.tensor([3, 1]))) - 1.5) < 1e-7


def test_config_validation():
    assert DPOConfig().beta == 0.1
    with pytest.raises(ConfigError, match="beta"):
        DPOConfig(beta=0.0)
    with pytest.raises(ConfigError, match="loss_type"):
        DPOConfig(loss_type="kto")
    with pytest.raises(ConfigError, match="label_smoothing"):
        DPOConfig(label_smoothing=0.6)
    with pytest.raises(ConfigError, match="label_smoothing"):
        DPOConfig(loss_type="ipo", label_smoothing=0.1)
    cfg = load_config(DPOConfig, None, ["nll_weight=0.2", "exclude_token_ids=5,6"])
    assert cfg.nll_weight == 0.2 and cfg.exclude_token_ids == [5, 6]


# --------------------------------------------------------------------------------------------
# Masks and a real model
# --------------------------------------------------------------------------------------------

EXCL = (3, 4)  # stand-ins for Llama 3 formatting tokens (e.g. <|eot_id|>, <|end_header_id|>)


def _tiny_llama(seed=0):
    from transformers import LlamaForCausalLM

    from reasonlab.llama.configs import preset

    torch.manual_seed(seed)
    cfg = preset("tiny-0.5m", vocab_size=64, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    return LlamaForCausalLM(cfg)


def _pairs(n=8, seed=0, end_token=3):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        prompt = [0] + torch.randint(10, 64, (int(torch.randint(3, 7, (1,), generator=g)),),
                                     generator=g).tolist()
        chosen = torch.randint(10, 64, (5,), generator=g).tolist() + [4, end_token]
        rejected = torch.randint(10, 64, (4,), generator=g).tolist() + [4, end_token]
        out.append(PreferencePair(prompt, chosen, rejected))
    return out


def test_masked_logps_ignore_excluded_positions():
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[0, 11, 12, 4, 13, 3], [0, 11, 3, 14, 15, 2]])
    comp = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0]])
    loss_mask = comp * (~torch.isin(ids, torch.tensor(EXCL))).long()
    logits = torch.randn(2, 6, 64, generator=g, requires_grad=True)
    sums, counts = masked_sequence_logps(logits, ids, loss_mask)
    assert counts.tolist() == [2, 3]
    sums.sum().backward()
    # logits[:, t] predicts ids[:, t+1]; positions predicting an excluded or prompt/pad token
    # get no gradient at all, the others do.
    predicts_counted = loss_mask[:, 1:].bool()
    grad_norm = logits.grad[:, :-1].abs().sum(-1)
    assert bool((grad_norm[~predicts_counted] == 0).all())
    assert bool((grad_norm[predicts_counted] > 0).all())
    # Changing the logits at excluded positions leaves the sums unchanged.
    with torch.no_grad():
        moved = logits.detach().clone()
        moved[0, 2] += 5 * torch.randn(64, generator=g)  # predicts ids[0,3] = 4 (excluded)
        moved[1, 1] += 5 * torch.randn(64, generator=g)  # predicts ids[1,2] = 3 (excluded)
        sums2, _ = masked_sequence_logps(moved, ids, loss_mask)
    assert torch.equal(sums.detach(), sums2)


def test_excluded_token_id_does_not_change_loss(one_thread):
    model = _tiny_llama(1).eval()
    ref = _tiny_llama(2).eval()

    def loss_for(end_token, exclude):
        enc = [EncodedPair(p.prompt, p.chosen, p.rejected) for p in _pairs(4, 3, end_token)]
        batch = collate_pairs(enc, pad_token_id=2, exclude_token_ids=exclude)
        with torch.no_grad():
            pol = pair_logps(model, batch)
            rf = pair_logps(ref, batch)
        return preference_loss(pol.chosen, pol.rejected, rf.chosen, rf.rejected,
                               chosen_lengths=pol.chosen_lengths, rejected_lengths=pol.rejected_lengths,
                               beta=0.1, nll_weight=0.2).loss

    # The completions end "... 4 <end>"; with 3 and 4 excluded, the final id (3 vs 4) is invisible.
    a = loss_for(3, EXCL)
    b = loss_for(4, EXCL)
    assert float(a) == float(b)
    # Without the exclusion the same change moves the loss: the test can fail.
    assert abs(float(loss_for(3, ())) - float(loss_for(4, ()))) > 1e-6


@needs_trl
def test_pair_logps_match_trl_fused_head_end_to_end():
    """Our masked log-probs + loss on a real tiny Llama equal TRL's own pipeline (its fused LM
    head and ``_compute_loss``) on the same batch, for sigmoid+NLL and IPO."""
    utils = pytest.importorskip("trl.trainer.utils")
    model = _tiny_llama(5).eval()
    trl_model = copy.deepcopy(model)
    utils.add_fused_lm_head(trl_model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    enc = [EncodedPair(p.prompt, p.chosen, p.rejected) for p in _pairs(3, 7)]
    batch = collate_pairs(enc, pad_token_id=2, exclude_token_ids=EXCL)
    ref_c = torch.tensor([-20.0, -25.0, -22.0])
    ref_r = torch.tensor([-21.0, -19.0, -24.0])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "completion_mask": batch["loss_mask"], "ref_chosen_logps": ref_c,
              "ref_rejected_logps": ref_r}
    with torch.no_grad():
        pol = pair_logps(model, batch)
        for types, weights, kind, w in ((["sigmoid", "sft"], [1.0, 0.2], "sigmoid", 0.2),
                                        (["ipo"], [1.0], "ipo", 0.0)):
            theirs = trl_dpo.DPOTrainer._compute_loss(_trl_self(types, weights, 0.1), trl_model,
                                                      inputs, False)
            ours = preference_loss(pol.chosen, pol.rejected, ref_c, ref_r,
                                   chosen_lengths=pol.chosen_lengths,
                                   rejected_lengths=pol.rejected_lengths, beta=0.1,
                                   loss_type=kind, nll_weight=w)
            assert abs(float(ours.loss) - float(theirs)) < 1e-5, (types, float(ours.loss), float(theirs))


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread; two threads on a busy 2-core CPU stall."""
    with torch_threads(1):  # tiny models: one thread is fastest on a shared CPU
        yield


def test_a_few_dpo_steps_raise_the_margin(tmp_path, one_thread):
    from reasonlab.runs import Run

    policy = _tiny_llama(0)
    reference = copy.deepcopy(policy).eval()
    pairs = _pairs(8, 11)
    cfg = DPOConfig(beta=0.1, lr=3e-3, epochs=6, batch_size=4, nll_weight=0.2, warmup_steps=2,
                    exclude_token_ids=list(EXCL), exclude_format_tokens=False)
    run = Run(tmp_path / "dpo", cfg, seed=0)
    res = train_dpo(policy, reference, None, pairs, cfg, run)
    hist = res["history"]
    assert res["steps"] == 12 and len(run.metrics()) == 12
    assert abs(hist[0]["margin"]) < 1e-6          # policy == reference at the first step
    assert res["final_margin"] > 0.5               # β·Δ grew well above zero
    assert res["final_accuracy"] == 1.0
    assert res["final_loss"] < 0.6 * hist[0]["loss"]
    # Same seed, same numbers.
    policy2 = _tiny_llama(0)
    res2 = train_dpo(policy2, copy.deepcopy(policy2).eval(), None, pairs, cfg, None)
    assert res2["history"][-1]["loss"] == hist[-1]["loss"]


def test_reference_none_uses_policy_before_updates(one_thread):
    policy = _tiny_llama(0)
    pairs = _pairs(4, 12)
    cfg = DPOConfig(lr=3e-3, epochs=2, batch_size=4, exclude_format_tokens=False)
    res = train_dpo(policy, None, None, pairs, cfg)
    assert abs(res["history"][0]["margin"]) < 1e-6
    assert res["history"][-1]["margin"] > 0


def test_text_pairs_mask_llama3_formatting_tokens(tiny_tokenizer):
    from reasonlab.training.dpo import encode_pair, excluded_ids

    tok = tiny_tokenizer
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    prompt = tok.apply_chat_template([{"role": "user", "content": "Tom has 3 apples."}],
                                     tokenize=False, add_generation_prompt=True)
    pair = PreferencePair(prompt, "The answer is 7.<|eot_id|>", "The answer is 30.<|eot_id|>")
    enc = encode_pair(pair, tok)
    assert enc.prompt[0] == tok.bos_token_id and enc.prompt.count(tok.bos_token_id) == 1
    assert enc.chosen[-2:] == [eot, tok.eos_token_id]  # EOS appended after the turn's eot
    excl = excluded_ids(tok, DPOConfig())
    assert eot in excl and tok.convert_tokens_to_ids("<|start_header_id|>") in excl
    assert excluded_ids(tok, DPOConfig(exclude_format_tokens=False)) == set()
    batch = collate_pairs([enc], pad_token_id=tok.pad_token_id, exclude_token_ids=excl)
    row = batch["input_ids"][0]
    counted = row[batch["loss_mask"][0].bool()].tolist()
    assert eot not in counted and tok.eos_token_id in counted
    assert len(counted) == len(enc.chosen) - 1
    # Truncation keeps the prompt's end and cuts the completion's tail.
    short = collate_pairs([enc], pad_token_id=tok.pad_token_id, max_len=8)
    assert short["input_ids"].shape[1] == 8 and int(short["completion_mask"][0].sum()) >= 1


def test_one_long_completion_keeps_one_prompt_and_bos(caplog):
    """A pair whose rejected completion is much longer than the chosen one: both rows keep the
    same prompt (cut once, sized by the longer side), BOS stays first, and a warning counts the
    cut tokens."""
    from reasonlab.training.dpo import truncate_pair

    prompt = [0] + list(range(10, 22))           # BOS + 12 tokens
    chosen = [30, 31, 32, 1]
    rejected = list(range(40, 70)) + [1]         # 31 tokens
    pair = EncodedPair(prompt, chosen, rejected)
    with caplog.at_level("WARNING", logger="reasonlab.training.dpo"):
        batch = collate_pairs([pair], pad_token_id=2, max_len=16, bos_token_id=0)
    ids, comp = batch["input_ids"], batch["completion_mask"]
    n_prompt = [int((comp[r] == 0).logical_and(batch["attention_mask"][r] == 1).sum()) for r in (0, 1)]
    assert n_prompt[0] == n_prompt[1] == 8        # half the budget, the same on both sides
    assert ids[0, :8].tolist() == ids[1, :8].tolist() == [0] + list(range(15, 22))
    assert int(batch["attention_mask"][0].sum()) == 12 and int(batch["attention_mask"][1].sum()) == 16
    assert ids[1, 8:].tolist() == list(range(40, 48))
    out, cut = truncate_pair(pair, 16, bos_token_id=0)
    assert (cut.prompt_cut, cut.chosen_cut, cut.rejected_cut) == (5, 0, 23)
    assert out.chosen == chosen
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "1 of 1 pairs truncated" in msg and "prompt tokens cut: 5" in msg and "rejected tokens cut: 23" in msg
    # Nothing to cut: no warning, pair unchanged.
    caplog.clear()
    with caplog.at_level("WARNING", logger="reasonlab.training.dpo"):
        same = collate_pairs([EncodedPair(prompt, chosen, chosen)], pad_token_id=2, max_len=64)
    assert not caplog.records and int(same["attention_mask"][0].sum()) == len(prompt) + len(chosen)


def test_tests_without_trl_still_run():
    """With TRL absent only the comparison tests skip: the rest of this file is collected."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; sys.modules['trl'] = None; import pytest; "
            "sys.exit(pytest.main([sys.argv[1], '-p', 'no:xdist', '-p', 'no:cacheprovider', "
            "'-k', 'config_validation or sigmoid_matches_trl or rewards_and_errors']))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__))], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "2 passed, 2 skipped" in out.stdout, out.stdout[-2000:]


def test_trl_pin_covers_the_installed_comparison():
    """The dev extra pins the TRL range whose private API the comparison calls."""
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement

    if trl_dpo is None:
        pytest.skip("TRL not installed")
    py = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    spec = next(Requirement(r) for r in py["project"]["optional-dependencies"]["dev"]
                if Requirement(r).name == "trl")
    assert version("trl") in spec.specifier
    assert "0.20" not in spec.specifier and "0.29.1" not in spec.specifier  # no _compute_loss there
    assert hasattr(trl_dpo.DPOTrainer, "_compute_loss")
