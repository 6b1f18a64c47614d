"""`threads` on the training configs and the trainer's model-FLOPs utilization (MFU)."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from reasonlab.config import ConfigError
from reasonlab.llama.packing import Document, pack_documents
from reasonlab.llama.pretrain import PretrainConfig
from reasonlab.llama.sft import SFTConfig
from reasonlab.llama.trainer import Trainer, matmul_peak_flops, model_flops_per_token


def _tiny_model(tie: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                      max_position_embeddings=64, tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg)


def test_flops_per_token_is_6n_plus_attention_by_hand():
    model = _tiny_model()
    # Parameters by hand: per layer q 16*16, k 16*8, v 16*8, o 16*16, mlp 3*16*32, two norms 2*16.
    per_layer = 256 + 128 + 128 + 256 + 3 * 512 + 32
    n_matmul = 2 * per_layer + 16 + 16 * 50  # + final norm + lm_head (input embedding excluded)
    assert sum(p.numel() for p in model.parameters()) == n_matmul + 50 * 16
    attention = 12 * 2 * 2 * 8 * 32  # 12 · L · H · Q · T
    assert model_flops_per_token(model, 32) == 6 * n_matmul + attention
    # Tied embeddings: the one table is the output matmul, so it counts once.
    assert model_flops_per_token(_tiny_model(tie=True), 32) == 6 * n_matmul + attention


def test_matmul_peak_is_measured_once_and_plausible():
    a = matmul_peak_flops(torch.device("cpu"), torch.float32, size=256, reps=3, min_seconds=0.01)
    assert 1e8 < a < 1e13  # between 0.1 GFLOP/s and 10 TFLOP/s on any CPU
    assert matmul_peak_flops(torch.device("cpu"), torch.float32, size=256, reps=3) == a  # cached
    assert matmul_peak_flops(torch.device("cpu"), torch.float32, size=256, reps=3, min_seconds=0.01, fresh=True) >= a


def test_threads_is_validated_and_applied_during_fit(monkeypatch):
    with pytest.raises(ConfigError, match="threads"):
        PretrainConfig(threads=-1)
    assert SFTConfig().threads == 1
    seen = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = PretrainConfig(preset="tiny-0.5m", seq_len=16, batch_size=4, max_steps=3, warmup_steps=1,
                         log_every=1, device="cpu", distributed="none", threads=2)
    docs = [Document(list(range(1, 40))) for _ in range(8)]
    data = pack_documents(docs, cfg.seq_len, 0)
    trainer = Trainer(cfg, _tiny_model(), data, None, None,
                      on_step=lambda s: seen.append(torch.get_num_threads()))
    out = trainer.fit()
    assert seen == [2, 2, 2]
    assert torch.get_num_threads() == 1  # restored after the run
    torch.set_num_threads(before)
    # MFU: the logged rate equals tokens/s times the FLOPs per token, over the same-run peak.
    assert out["model_flops_per_s"] == pytest.approx(out["tokens_per_s"] * trainer.flops_per_token)
    assert out["mfu"] == pytest.approx(out["model_flops_per_s"] / trainer.peak_flops)
    assert 0 < out["mfu"] < 1.5


def test_fsdp_on_one_device_only_when_asked_under_torchrun(monkeypatch):
    import torch.distributed as dist

    from reasonlab.llama import distributed as D

    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # no process group needed here
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("RANK", raising=False)
    assert D.init_distributed("fsdp", "cpu")[0].mode == "none"  # plain python: unwrapped
    monkeypatch.setenv("RANK", "0")
    assert D.init_distributed("fsdp", "cpu")[0].mode == "fsdp"  # torchrun, one process
    assert D.init_distributed("auto", "cpu")[0].mode == "none"
    assert D.init_distributed("ddp", "cpu")[0].mode == "none"
