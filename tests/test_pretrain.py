"""Pre-training and SFT on a tiny Llama: loss falls, resume is exact, checkpoints load in HF."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from reasonlab.data.skillmath import SkillMathConfig, pretraining_texts, sample_problems, sft_pairs
from reasonlab.llama.pretrain import PretrainConfig, pretrain
from reasonlab.llama.sft import SFTConfig, pair_document, sft
from reasonlab.llama.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def corpus():
    cfg = SkillMathConfig()
    probs = sample_problems(cfg, 600, seed=11, k=1)
    texts = list(pretraining_texts(probs))
    tok = train_tokenizer(texts[:200], vocab_size=300)
    return tok, texts[:560], texts[560:], probs


def _cfg(**kw):
    base = dict(preset="tiny-0.5m", seq_len=128, batch_size=8, max_steps=12, warmup_steps=2,
                eval_every=6, eval_batches=2, checkpoint_every=6, log_every=3, lr=3e-3, seed=3,
                device="cpu")
    base.update(kw)
    return PretrainConfig(**base)


def test_pretraining_lowers_validation_loss_below_unigram_entropy(corpus, tmp_path):
    tok, train, val, _ = corpus
    res = pretrain(_cfg(max_steps=120, batch_size=16, eval_every=60, checkpoint_every=120),
                   tok, train, val, tmp_path / "run")
    assert res["val_loss"] < 0.6 * res["unigram_entropy"], res
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < losses[0] - 1.0


def test_killed_and_resumed_run_ends_with_identical_weights(corpus, tmp_path):
    tok, train, val, _ = corpus
    pretrain(_cfg(), tok, train, val, tmp_path / "full")

    class Killed(Exception):
        pass

    def kill(state):
        if state.step == 8:  # after the step-6 checkpoint: steps 7–8 are lost and redone
            raise Killed

    with pytest.raises(Killed):
        pretrain(_cfg(), tok, train, val, tmp_path / "resumed", on_step=kill)
    res = pretrain(_cfg(), tok, train, val, tmp_path / "resumed")
    assert res["steps"] == 12
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(x)["step"] for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # no duplicated lines from the lost steps


def test_checkpoint_loads_with_plain_transformers(corpus, tmp_path):
    tok, train, val, _ = corpus
    pretrain(_cfg(max_steps=3, checkpoint_every=3), tok, train, val, tmp_path / "r")
    model_dir = tmp_path / "r" / "model"
    hf = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    ours = load_file(str(model_dir / "model.safetensors"))
    assert set(ours) == set(hf.state_dict()) - ({"lm_head.weight"} - set(ours))
    ids = tok(val[0], return_tensors="pt")["input_ids"]
    from reasonlab.llama.pretrain import build_model

    ref = build_model(_cfg(init_from=str(model_dir)), tok).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ref(ids).logits, rtol=0, atol=0)
    assert hf.config.rms_norm_eps == 1e-5 and hf.config.rope_parameters["rope_theta"] == 500000.0


def test_sft_masks_prompt_and_learns_completions(corpus, tmp_path):
    tok, train, val, probs = corpus
    doc = pair_document(tok, "Q: 2+2?\nA: ", "4")
    n_prompt = len(tok("Q: 2+2?\nA: ", add_special_tokens=False)["input_ids"]) + 1  # + bos
    assert doc.target_mask == [False] * n_prompt + [True] * (len(doc.ids) - n_prompt)
    assert doc.ids[-1] == tok.eos_token_id
    pairs = sft_pairs(probs)
    cfg = SFTConfig(preset="tiny-0.5m", seq_len=128, batch_size=16, max_steps=60, warmup_steps=5,
                    eval_every=30, eval_batches=4, checkpoint_every=60, lr=3e-3, device="cpu")
    res = sft(cfg, tok, pairs[:500], tmp_path / "sft", val_pairs=pairs[500:])
    vals = [json.loads(x)["val_loss"] for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()
            if "val_loss" in x]
    assert vals[-1] < vals[0] and res["val_loss"] < 1.5


def test_batch_ramp_and_accumulation(corpus, tmp_path):
    tok, train, val, _ = corpus
    cfg = _cfg(max_steps=6, batch_size=4, micro_batch_size=2, batch_ramp=[[2000, 8]], checkpoint_every=6)
    pretrain(cfg, tok, train, val, tmp_path / "ramp")
    sizes = [json.loads(x).get("batch_size") for x in (tmp_path / "ramp" / "metrics.jsonl").read_text().splitlines()]
    sizes = [s for s in sizes if s is not None]
    assert sizes[0] == 4 and sizes[-1] == 8


def test_accumulation_matches_one_big_batch(corpus, tmp_path):
    tok, train, val, _ = corpus
    pretrain(_cfg(max_steps=3, checkpoint_every=3), tok, train, val, tmp_path / "big")
    pretrain(_cfg(max_steps=3, checkpoint_every=3, micro_batch_size=2), tok, train, val, tmp_path / "acc")
    a = load_file(str(tmp_path / "big" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "acc" / "model" / "model.safetensors"))
    # Summation order differs, and Adam's m/sqrt(v) amplifies float noise where a gradient is ~0:
    # allow 5e-5, under 2% of one Adam step (lr 3e-3), far below what a wrong normalization gives.
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=5e-5)


def test_rope_theta_override_reaches_the_saved_model(tmp_path, tiny_tokenizer):
    from reasonlab.config import ConfigError
    from reasonlab.llama.pretrain import build_model

    default = build_model(PretrainConfig(preset="tiny-0.5m"), tiny_tokenizer)
    model = build_model(PretrainConfig(preset="tiny-0.5m", rope_theta=10_000.0), tiny_tokenizer)
    half = model.config.head_dim // 2
    expected = 10_000.0 ** (-torch.arange(half, dtype=torch.float32) / half)
    assert torch.allclose(model.model.rotary_emb.inv_freq, expected)
    assert default.config.rope_parameters["rope_theta"] == 500_000.0
    model.save_pretrained(str(tmp_path / "m"))
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    assert again.config.rope_parameters["rope_theta"] == 10_000.0
    with pytest.raises(ConfigError, match="rope_theta"):
        PretrainConfig(rope_theta=0.0)
