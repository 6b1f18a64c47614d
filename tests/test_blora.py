"""Bayesian-LoRA: gates, quantizer, BOPs, merge, save/load and the PEFT export."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from transformers import LlamaConfig, LlamaForCausalLM

from reasonlab.config import ConfigError, from_dict
from reasonlab.peft import blora as B
from reasonlab.peft.export import export_peft, load_peft


def micro_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def ids() -> torch.Tensor:
    return torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(1))


def trained_like(model: nn.Module, seed: int = 3) -> None:
    """Give the adapters non-trivial weights (as after training)."""
    g = torch.Generator().manual_seed(seed)
    for _, l in B.blora_layers(model):
        with torch.no_grad():
            l.lora_A.copy_(torch.randn(l.lora_A.shape, generator=g) * 0.3)
            l.lora_B.copy_(torch.randn(l.lora_B.shape, generator=g) * 0.3)
            l.lora_E.copy_(torch.randn(l.lora_E.shape, generator=g))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="'r'"):
        B.BLoRAConfig(r=0)
    with pytest.raises(ConfigError, match="regularizer"):
        from_dict(B.BLoRAConfig, {"regularizer": "l2"})
    with pytest.raises(ValueError, match="no nn.Linear matches"):
        B.apply_blora(micro_llama(), B.BLoRAConfig(target_modules=["nope"]))


def test_init_is_full_rank_32_bit_and_identity():
    model = micro_llama()
    x = ids()
    with torch.no_grad():
        ref = model(x).logits
    names = B.apply_blora(model, B.BLoRAConfig(r=6, target_modules=["q_proj", "v_proj"]))
    assert names == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                     "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x).logits, ref)  # E = 0: the untrained adapter is the identity
    rep = B.report(model)
    assert set(rep["effective_ranks"].values()) == {6}
    assert all(b == {"A": 32, "E": 32, "B": 32} for b in rep["bit_widths"].values())
    assert rep["relative_bops"] == pytest.approx(1.0)
    # 32-bit fake quantization equals the unquantized adapter
    trained_like(model)
    with torch.no_grad():
        q = model(x).logits
        B.set_quantize(model, False)
        fp = model(x).logits
    assert not torch.equal(q, ref)
    torch.testing.assert_close(q, fp, rtol=0, atol=1e-5)
    for _, l in B.blora_layers(model):
        torch.testing.assert_close(B.fake_quantize(l.lora_A, torch.ones(4)), l.lora_A, rtol=0, atol=1e-6)


def test_forcing_a_gate_off_removes_that_rank_and_all_above():
    model = micro_llama()
    B.apply_blora(model, B.BLoRAConfig(r=6, target_modules=["v_proj"], quant_gates=False))
    trained_like(model)
    _, layer = next(B.blora_layers(model))
    layer.eval()
    x = torch.randn(5, layer.d_in)
    with torch.no_grad():
        layer.rank_log_alpha[2] = -10.0  # gate g_3 off -> ranks 3, 4, 5 off (rank 0 always on)
        assert layer.rank_mask().tolist() == [1, 1, 1, 0, 0, 0]
        assert layer.effective_rank() == 3
        y = layer(x)
        a, e, b = layer.lora_A, layer.lora_E, layer.lora_B
        want = layer.base_layer(x) + layer.scaling * ((x @ a[:3].T) * e[:3]) @ b[:, :3].T
        torch.testing.assert_close(y, want)
        layer.rank_log_alpha[0] = -10.0  # the first gate off leaves only the kept rank
        assert layer.effective_rank() == 1


def test_training_gates_are_stochastic_and_nested():
    torch.manual_seed(0)
    la = torch.tensor([0.0, 0.0, 0.0, 0.0])
    z = torch.stack([B.nested(B.hard_concrete(la, True)) for _ in range(200)])
    assert ((z[:, 1:] <= z[:, :-1] + 1e-7).all())  # nested: never more on above than below
    assert 0.2 < z[:, 1].mean() < 0.8 and z.min() == 0 and z.max() == 1
    # P(z > 0) matches the closed form
    la = torch.tensor([0.5])
    s = B.hard_concrete(la.expand(20000), True)
    assert (s > 0).float().mean().item() == pytest.approx(B.prob_on(la).item(), abs=0.01)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantizer_at_b_bits_takes_at_most_2_to_the_b_levels(bits):
    x = torch.randn(5000, generator=torch.Generator().manual_seed(0))
    n_on = {2: 0, 4: 1, 8: 2}[bits]
    gates = torch.tensor([1.0] * n_on + [0.0] * (4 - n_on))
    q = B.fake_quantize(x, gates)
    levels = torch.unique(torch.round(q * 1e5))
    assert len(levels) <= 2 ** bits
    assert len(levels) >= 2 ** bits // 2  # it really uses the grid
    step = (x.max() - x.min()) / (2 ** bits - 1)
    assert (q - x).abs().max() <= step / 2 + 1e-5  # nearest grid point
    assert B.bit_width(gates) == bits
    xg = x.clone().requires_grad_(True)
    B.fake_quantize(xg, gates).sum().backward()
    assert torch.equal(xg.grad, torch.ones_like(x))  # straight-through


def test_merge_equals_unmerged_forward():
    model = micro_llama()
    B.apply_blora(model, B.BLoRAConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    trained_like(model)
    _, l = next(B.blora_layers(model))
    with torch.no_grad():
        l.quant_log_alpha[0, 1:] = -10.0  # A at 4 bits
        l.rank_log_alpha[1] = -10.0  # rank 2
    model.eval()
    x = ids()
    with torch.no_grad():
        y = model(x).logits
        B.merge(model)
        assert not list(B.blora_layers(model))
        assert all(type(m) is not B.BLoRALinear for m in model.modules())
        torch.testing.assert_close(model(x).logits, y, rtol=0, atol=1e-5)


def test_bops_of_a_two_layer_example_counted_by_hand():
    net = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 4))
    B.apply_blora(net, B.BLoRAConfig(r=3, target_modules=["0", "2"]))
    l0, l2 = net[0], net[2]
    with torch.no_grad():
        l0.rank_log_alpha[1] = -10.0  # layer 0: rank 2
        l0.quant_log_alpha[0, 1:] = -10.0  # A: 4 bits
        l0.quant_log_alpha[2, :] = -10.0  # B: 2 bits (E stays 32)
        l2.rank_log_alpha[0] = -10.0  # layer 2: rank 1
        l2.quant_log_alpha[:, 2:] = -10.0  # A, E, B: 8 bits
    rep = B.report(net)
    # by hand: layer 0, rank 2: A 2*10 MACs * 4 b, E 2 * 32 b, B 2*6 * 2 b; activations 32 b
    l0_bops = (2 * 10 * 4 + 2 * 32 + 2 * 6 * 2) * 32  # = 168 * 32 = 5376
    l2_bops = (1 * 6 * 8 + 1 * 8 + 1 * 4 * 8) * 32  # = 88 * 32 = 2816
    full = (3 * (10 + 1 + 6) + 3 * (6 + 1 + 4)) * 32 * 32  # = 86016
    assert rep["bops"] == l0_bops + l2_bops == 8192
    assert rep["full_bops"] == full
    assert rep["relative_bops"] == pytest.approx(8192 / 86016)
    assert rep["effective_ranks"] == {"0": 2, "2": 1}
    assert rep["bit_widths"] == {"0": {"A": 4, "E": 32, "B": 2}, "2": {"A": 8, "E": 8, "B": 8}}
    # plain LoRA r=8 at 32 bits on the same modules
    assert B.lora_bops(rep["layers"], 8) == 8 * (16 + 10) * 32 * 32


def test_regularizer_falls_as_gates_close_and_bop_weighting():
    net = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 4))
    cfg = B.BLoRAConfig(r=3, target_modules=["0", "2"], log_alpha_init=20.0)
    B.apply_blora(net, cfg)
    # all on: count = per quantizer (1/r) * r * (1 + 4) -> 5 per matrix, 3 matrices, 2 layers
    assert B.regularizer(net).item() == pytest.approx(30.0, rel=1e-4)
    cfg.regularizer = "bop"
    assert B.regularizer(net).item() == pytest.approx(1.0, rel=1e-4)  # expected relative BOPs
    with torch.no_grad():
        for _, l in B.blora_layers(net):
            l.quant_log_alpha.fill_(-20.0)  # every matrix at 2 bits
    assert B.regularizer(net).item() == pytest.approx(2 / 32, rel=1e-3)
    # gradients reach the gate logits through the regularizer
    B.regularizer(net).backward()
    assert net[0].rank_log_alpha.grad is not None


def test_gates_learn_to_switch_off_under_the_regularizer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8))
    cfg = B.BLoRAConfig(r=4, target_modules=["0"], reg_weight=1.0, gate_lr=0.5, log_alpha_init=3.0)
    B.apply_blora(net, cfg)
    opt = torch.optim.Adam(B.param_groups(net, cfg))
    x = torch.randn(32, 8)
    start = B.regularizer(net).item()
    for _ in range(60):
        loss = net(x).pow(2).mean() * 0 + cfg.reg_weight * B.regularizer(net)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert B.regularizer(net).item() < 0.5 * start
    rep = B.report(net)
    assert rep["effective_ranks"]["0"] == 1 and rep["relative_bops"] < 0.1
    assert [g["lr"] for g in opt.param_groups] == [cfg.lr, cfg.gate_lr]


def test_save_load_adapter_roundtrip(tmp_path):
    model = micro_llama()
    B.apply_blora(model, B.BLoRAConfig(r=4, target_modules=["q_proj"]))
    trained_like(model)
    with torch.no_grad():
        next(B.blora_layers(model))[1].rank_log_alpha[0] = -9.0
    model.eval()
    x = ids()
    with torch.no_grad():
        y = model(x).logits
    B.save_adapter(model, tmp_path / "ad")
    assert (tmp_path / "ad" / B.ADAPTER_WEIGHTS).stat().st_size < 20_000  # the adapter alone
    fresh = B.load_adapter(micro_llama(), tmp_path / "ad").eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x).logits, y, rtol=0, atol=0)
    assert B.report(fresh)["effective_ranks"] == B.report(model)["effective_ranks"]
    with pytest.raises(FileNotFoundError, match="no B-LoRA adapter"):
        B.load_adapter(micro_llama(), tmp_path)


@pytest.mark.parametrize("quantized", [True, False])
def test_exported_peft_adapter_reproduces_our_outputs(tmp_path, quantized):
    model = micro_llama()
    B.apply_blora(model, B.BLoRAConfig(r=5, alpha=10.0, target_modules=["q_proj", "v_proj", "up_proj"]))
    trained_like(model)
    layers = dict(B.blora_layers(model))
    with torch.no_grad():
        layers["model.layers.0.self_attn.q_proj"].rank_log_alpha[1] = -10.0  # rank 2
        layers["model.layers.1.self_attn.v_proj"].rank_log_alpha[0] = -10.0  # rank 1
        layers["model.layers.1.mlp.up_proj"].quant_log_alpha[:, 1:] = -10.0  # 4 bits
    model.eval()
    B.set_quantize(model, quantized)
    x = ids()
    with torch.no_grad():
        ours = model(x).logits
    info = export_peft(model, tmp_path / "peft", quantized=quantized)
    assert info["rank_pattern"]["model.layers.0.self_attn.q_proj"] == 2
    assert info["rank_pattern"]["model.layers.1.self_attn.v_proj"] == 1
    assert info["bit_widths"]["model.layers.1.mlp.up_proj"] == {"A": 4, "E": 4, "B": 4}
    peft_model = load_peft(micro_llama(), tmp_path / "peft").eval()
    shapes = {n: p.shape for n, p in peft_model.named_parameters() if "lora_A" in n}
    assert shapes["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"] == (2, 32)
    with torch.no_grad():
        theirs = peft_model(input_ids=x).logits
    assert not torch.allclose(theirs, micro_llama()(x).logits, atol=1e-3)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


def test_compare_runner_end_to_end(tmp_path):
    """The three methods on one micro task: same data, every loss falls, B-LoRA's export matches."""
    from reasonlab.data.skillmath import SkillMathConfig, generate, pretraining_texts
    from reasonlab.llama.configs import preset
    from reasonlab.llama.tokenizer import train_tokenizer
    from reasonlab.peft.compare import CompareConfig, format_table, run_compare

    data = SkillMathConfig(n_train=64, n_val=0, n_test=6, n_test_template=0, n_test_pair=0,
                           skills=["sub"], k_weights=[1.0, 0.0, 0.0], max_number=20, max_answer=20,
                           templates=[0], variants=[0], heldout_template=-1, heldout_pairs=[])
    tok = train_tokenizer(list(pretraining_texts(generate(data)["train"])), vocab_size=272)
    torch.manual_seed(0)
    cfg = preset("tiny-0.5m", vocab_size=len(tok), max_position_embeddings=128)
    cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = 32, 64, 1
    base = tmp_path / "base"
    LlamaForCausalLM(cfg).save_pretrained(base)
    tok.save_pretrained(base)
    ccfg = from_dict(CompareConfig, {
        "model": str(base), "data": vars(data), "seeds": [0], "steps": 20, "batch_size": 8,
        "seq_len": 64, "lr": 0.01, "eval_limit": 4, "max_new_tokens": 4,
        "target_modules": ["q_proj", "v_proj"],
        "blora": {"reg_weight": 0.5, "gate_lr": 0.5, "log_alpha_init": 3.0}})
    res = run_compare(ccfg, tmp_path / "run", progress=False)
    assert set(res["methods"]) == {"lora", "adalora", "blora"}
    for r in res["runs"]:
        assert r["loss_last"] < r["loss_first"]
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n"] == 4
    # LoRA r=8 on q (32 -> heads * head_dim) and v (32 -> kv_heads * head_dim) of one layer
    hd = cfg.head_dim
    q_out, v_out = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    assert res["trainable_params"]["lora"] == 8 * (32 + q_out) + 8 * (32 + v_out)
    # B-LoRA: the same A and B, E (8 per module), 7 rank gates and 3 x 4 bit gates per module
    assert res["trainable_params"]["blora"] == res["trainable_params"]["lora"] + 2 * (8 + 7 + 12)
    assert res["peft_export_max_abs_diff"] < 1e-4
    assert res["relative_bops_reduction"] > 0.0  # the regularizer already closed some gates
    assert (tmp_path / "run" / "accuracy.png").exists()
    assert (tmp_path / "run" / "blora" / "seed0" / "peft_adapter" / "adapter_config.json").exists()
    assert "blora" in format_table(res)
    again = run_compare(ccfg, tmp_path / "run", progress=False)  # finished runs are read back
    assert again["runs"] == res["runs"]


def test_load_base_takes_a_registered_model_name(tmp_path, monkeypatch):
    """``reasonlab blora --model herd-m``: a name that is not a folder goes through the model
    resolvers (the CLI registers the model cache); an unknown one is refused naming it."""
    from transformers import LlamaForCausalLM

    import reasonlab.lm.load as L
    from reasonlab.llama.configs import preset
    from reasonlab.llama.tokenizer import train_tokenizer
    from reasonlab.peft.compare import load_base

    tok = train_tokenizer(["1 + 2 = 3", "4 - 1 = 3"], vocab_size=272)
    cfg = preset("tiny-0.5m", vocab_size=len(tok), max_position_embeddings=64)
    cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = 16, 32, 1
    cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = 2, 1, 8
    folder = tmp_path / "named"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    monkeypatch.setattr(L, "_RESOLVERS", [lambda spec: folder if spec == "my-recipe" else None])
    model, _ = load_base("my-recipe")
    assert model.config.hidden_size == 16
    with pytest.raises(FileNotFoundError, match="no-such-recipe"):
        load_base("no-such-recipe")
