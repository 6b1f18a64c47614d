"""The trainer's step on a micro Llama (seconds): learning rates per step, accumulation,
the batch ramp, the data stream and an exact resume from a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from reasonlab.config import ConfigError
from reasonlab.llama.packing import Document, pack_documents
from reasonlab.llama.schedules import warmup_cosine_lr
from reasonlab.llama.trainer import TrainConfig, Trainer, evaluate, stream_indices, token_losses
from reasonlab.runs import Run, read_jsonl


def _model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                      max_position_embeddings=32)
    return LlamaForCausalLM(cfg)


def _data(n_docs: int = 12, seq_len: int = 8):
    g = torch.Generator().manual_seed(3)
    docs = [Document(torch.randint(1, 40, (int(torch.randint(3, 11, (1,), generator=g)),),
                                   generator=g).tolist()) for _ in range(n_docs)]
    return pack_documents(docs, seq_len, 0)


def _cfg(**kw) -> TrainConfig:
    base = dict(preset="tiny-0.5m", seq_len=8, batch_size=4, max_steps=6, warmup_steps=2,
                lr=1e-2, min_lr_ratio=0.1, eval_every=100, checkpoint_every=100, log_every=1,
                device="cpu", distributed="none", seed=1, grad_clip=1.0)
    base.update(kw)
    return TrainConfig(**base)


def test_each_step_uses_the_schedules_rate_for_its_own_step_index():
    cfg = _cfg(max_steps=6, warmup_steps=2)
    tr = Trainer(cfg, _model(), _data(), None, None)
    lrs = []
    for _ in range(6):
        out = tr.train_step()
        lrs.append(out["lr"])
        assert tr.optimizer.param_groups[0]["lr"] == out["lr"]
        assert tr.optimizer.param_groups[1]["lr"] == out["lr"]
    assert lrs == [warmup_cosine_lr(s, peak_lr=1e-2, warmup_steps=2, total_steps=6, min_lr_ratio=0.1)
                   for s in range(6)]
    assert lrs[0] == pytest.approx(5e-3) and lrs[1] == pytest.approx(1e-2)
    assert tr.state.step == 6 and tr.state.cursor == 24


def test_one_step_is_adamw_on_the_mean_token_loss_with_clipping():
    """Step 0 by hand: the loss is the mean over target tokens, gradients are clipped to
    ``grad_clip`` and the AdamW step uses the warmup rate; weight decay only on matrices."""
    data = _data()
    cfg = _cfg(warmup_steps=2, grad_clip=0.5, weight_decay=0.1)
    tr = Trainer(cfg, _model(), data, None, None)
    ref = _model()
    idx = stream_indices(len(data), 0, 4, cfg.seed)
    s, n = token_losses(ref, data.select(idx), torch.device("cpu"))
    (s / n).backward()
    total = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
    opt = torch.optim.AdamW([{"params": [p for p in ref.parameters() if p.ndim >= 2], "weight_decay": 0.1},
                             {"params": [p for p in ref.parameters() if p.ndim < 2], "weight_decay": 0.0}],
                            lr=5e-3, betas=(cfg.beta1, cfg.beta2))
    opt.step()
    out = tr.train_step()
    assert out["loss"] == pytest.approx((s / n).item(), rel=1e-6)
    assert out["grad_norm"] == pytest.approx(float(total), rel=1e-5)
    assert out["batch_size"] == 4
    assert tr.state.tokens_seen == int(n)
    for (name, a), b in zip(tr.model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=name)


def test_accumulation_over_micro_batches_equals_one_batch():
    data = _data()
    whole = Trainer(_cfg(), _model(), data, None, None)
    acc = Trainer(_cfg(micro_batch_size=1), _model(), data, None, None)
    for _ in range(3):
        a, b = whole.train_step(), acc.train_step()
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    for p, q in zip(whole.model.parameters(), acc.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_micro_batch_must_divide_the_batch():
    tr = Trainer(_cfg(), _model(), _data(), None, None)
    assert tr._micro_size(4) == 4
    tr.cfg.micro_batch_size = 2
    assert tr._micro_size(4) == 2 and tr._micro_size(6) == 2
    tr.cfg.micro_batch_size = 3
    with pytest.raises(ConfigError, match="not divisible by micro_batch_size 3"):
        tr._micro_size(4)


def test_batch_ramp_switches_by_target_tokens_seen():
    data = _data()
    tr = Trainer(_cfg(batch_size=2, batch_ramp=[[1, 4]], max_steps=3), _model(), data, None, None)
    first = tr.train_step()
    assert first["batch_size"] == 2 and tr.state.cursor == 2
    second = tr.train_step()
    assert second["batch_size"] == 4 and tr.state.cursor == 6


def test_stream_is_per_epoch_shuffles_that_continue_across_epochs():
    a = stream_indices(5, 0, 12, seed=2)
    assert sorted(a[:5]) == list(range(5)) and sorted(a[5:10]) == list(range(5))
    assert a[:5] != a[5:10]  # a new shuffle each epoch
    assert stream_indices(5, 3, 4, seed=2) == a[3:7]  # resuming mid-stream gives the same items
    assert stream_indices(5, 10, 2, seed=2) == a[10:12]
    assert stream_indices(5, 0, 5, seed=3) != a[:5]
    assert stream_indices(5, 0, 0, seed=2) == []


def test_evaluate_is_the_token_weighted_mean_over_the_first_batches():
    data = _data()
    model = _model()
    dev = torch.device("cpu")
    s, n = token_losses(model, data.select(range(0, 4)), dev)
    assert evaluate(model, data, dev, 4, 1) == pytest.approx((s / n).item(), rel=1e-6)
    s2, n2 = token_losses(model, data.select(range(4, len(data))), dev)
    assert evaluate(model, data, dev, 4, 5) == pytest.approx(((s + s2) / (n + n2)).item(), rel=1e-6)
    assert model.training  # evaluate puts the model back in training mode


class _Stop(Exception):
    pass


@pytest.fixture(autouse=True)
def _no_peak_measurement(monkeypatch):
    """The MFU peak (a timed 1024² matmul) is not what these tests check: keep them fast."""
    import reasonlab.llama.trainer as T

    monkeypatch.setattr(T, "matmul_peak_flops", lambda *a, **k: 1e9)


def _fit(out, stop_at=None, **kw):
    cfg = _cfg(max_steps=6, checkpoint_every=2, keep_checkpoints=2, **kw)
    run = Run(out, config=cfg, seed=cfg.seed)

    def on_step(state):
        if stop_at is not None and state.step == stop_at:
            raise _Stop

    tr = Trainer(cfg, _model(), _data(), _data(6), run, on_step=on_step)
    return tr, tr.fit


def test_killed_run_resumes_from_its_last_checkpoint_to_identical_weights(tmp_path):
    full, fit = _fit(tmp_path / "full")
    fit()
    part, fit = _fit(tmp_path / "part", stop_at=5)  # checkpoints at 2 and 4, killed after 5
    with pytest.raises(_Stop):
        fit()
    ckpts = sorted(p.name for p in (tmp_path / "part" / "checkpoints").glob("step_*"))
    assert ckpts == ["step_0000002", "step_0000004"]
    resumed, fit = _fit(tmp_path / "part")
    assert resumed.latest_checkpoint().name == "step_0000004"
    out = fit()
    assert out["steps"] == 6 and resumed.state.step == 6
    assert resumed.state.cursor == full.state.cursor == 24
    assert resumed.state.tokens_seen == full.state.tokens_seen
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    # the optimizer state resumed too (AdamW moments), not only the weights
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for k in sa:
        assert torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"])
    # only the newest keep_checkpoints are kept; no temporary folder is left behind
    names = sorted(p.name for p in (tmp_path / "part" / "checkpoints").iterdir())
    assert names == ["step_0000004", "step_0000006"]
    state = json.loads((tmp_path / "part" / "checkpoints" / "step_0000006" / "state.json").read_text())
    assert state["step"] == 6 and state["cursor"] == 24
    # metrics: the lost step 5 is logged once, steps in order, the last with val_loss
    metrics = list(read_jsonl(tmp_path / "part" / "metrics.jsonl"))
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4, 5, 6]
    assert [m["step"] for m in metrics if "val_loss" in m] == [6]


def test_latest_checkpoint_ignores_incomplete_ones(tmp_path):
    tr, _ = _fit(tmp_path / "r")
    assert tr.latest_checkpoint() is None
    root = tmp_path / "r" / "checkpoints"
    (root / "step_0000010").mkdir(parents=True)  # no state.json: incomplete
    (root / "step_0000009").mkdir()
    (root / "step_0000009" / "state.json").write_text("{}")
    (root / "step_0000003").mkdir()
    (root / "step_0000003" / "state.json").write_text("{}")
    assert tr.latest_checkpoint().name == "step_0000009"
    assert Trainer(_cfg(), _model(), _data(), None, None).latest_checkpoint() is None


def test_bf16_precision_runs_the_matmuls_in_bf16_on_the_cpu_and_keeps_fp32_weights():
    """``precision: bf16`` autocasts on a CPU (logits in bf16 inside, the loss in fp32); its loss
    is the fp32 one to bf16 rounding, and ``auto`` on a CPU stays exact fp32."""
    from reasonlab.device import autocast, uses_bf16

    cpu = torch.device("cpu")
    assert uses_bf16(cpu, "bf16") and not uses_bf16(cpu, "auto") and not uses_bf16(cpu, "fp32")
    with pytest.raises(ValueError, match="fp16.*auto, fp32, bf16"):
        uses_bf16(cpu, "fp16")
    model, data = _model(), _data()
    batch = data.select(range(4))
    with autocast(cpu, precision="bf16"):
        assert model(input_ids=batch.input_ids).logits.dtype == torch.bfloat16
    s32, n = token_losses(model, batch, cpu)
    s16, n16 = token_losses(model, batch, cpu, "bf16")
    assert s16.dtype == torch.float32 and n16 == n
    assert (s16 / n).item() == pytest.approx((s32 / n).item(), rel=2e-2)
    assert s16.item() != s32.item()  # it did compute in bf16


def test_bf16_training_lowers_the_loss_like_fp32():
    def run(precision):
        tr = Trainer(_cfg(max_steps=30, warmup_steps=2, precision=precision), _model(), _data(), None, None)
        losses = [tr.train_step()["loss"] for _ in range(30)]
        assert all(p.dtype == torch.float32 for p in tr.model.parameters())
        return losses
    f32, b16 = run("fp32"), run("bf16")
    assert b16[-1] < 0.7 * b16[0]
    assert b16[-1] == pytest.approx(f32[-1], rel=0.1)


def test_unknown_precision_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match="precision.*fp16"):
        _cfg(precision="fp16")
