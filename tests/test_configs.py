import math

import pytest
import torch

from reasonlab.llama.configs import count_parameters, ffn_hidden_dim, known_presets, preset


@pytest.mark.parametrize("name,expected_b", [("llama3-8b", 8.03), ("llama3.1-8b", 8.03),
                                             ("llama3-70b", 70.55), ("llama3.1-405b", 405.85)])
def test_parameter_counts_match_published_size(name, expected_b):
    n = count_parameters(preset(name))  # meta device, nothing allocated
    assert round(n / 1e9, 2) == expected_b


def test_8b_architecture_values():
    c = preset("llama3-8b")
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (32, 4096, 32, 8)
    assert c.intermediate_size == 14336 and c.vocab_size == 128256
    assert c.rms_norm_eps == 1e-5 and c.rope_parameters["rope_theta"] == 500000.0
    assert c.tie_word_embeddings is False and c.attention_bias is False
    assert preset("llama3-70b").intermediate_size == 28672
    assert preset("llama3-405b").intermediate_size == 53248
    assert ffn_hidden_dim(4096, 1.3, 1024) == 14336


def test_tiny_herd_follows_rules_and_grows():
    sizes = [count_parameters(preset(n, vocab_size=512)) for n in known_presets() if n.startswith("tiny-")]
    assert len(sizes) >= 4 and sizes == sorted(sizes)
    assert 3e5 < sizes[0] and sizes[-1] < 3e7
    c = preset("tiny-2m")
    assert c.rms_norm_eps == 1e-5 and c.rope_parameters["rope_theta"] == 500000.0
    assert c.num_attention_heads > c.num_key_value_heads  # GQA


def test_unknown_preset_lists_known():
    with pytest.raises(KeyError) as e:
        preset("llama3-9b")
    assert "llama3-8b" in str(e.value) and "tiny-2m" in str(e.value)


def _spec_llama3_inv_freq(head_dim, theta, factor=8.0, low=1.0, high=4.0, L=8192):
    """The spec's formula, written independently of transformers."""
    out = []
    for i in range(0, head_dim, 2):
        inv = 1.0 / theta ** (i / head_dim)
        wavelen = 2 * math.pi / inv
        if wavelen < L / high:
            out.append(inv)
        elif wavelen > L / low:
            out.append(inv / factor)
        else:
            s = (L / wavelen - low) / (high - low)
            out.append((1 - s) * inv / factor + s * inv)
    return torch.tensor(out, dtype=torch.float64)


def test_llama31_rope_inverse_frequencies_match_spec():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = preset("llama3.1-8b")
    assert cfg.rope_parameters["rope_type"] == "llama3" and cfg.max_position_embeddings == 131072
    inv, scale = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    ref = _spec_llama3_inv_freq(128, 500000.0)
    torch.testing.assert_close(inv.double(), ref, rtol=1e-6, atol=0)
    # and the three regimes all occur
    plain = torch.tensor([1.0 / 500000.0 ** (i / 128) for i in range(0, 128, 2)], dtype=torch.float64)
    ratio = ref / plain
    assert (ratio == 1).any() and torch.isclose(ratio, torch.tensor(1 / 8, dtype=torch.float64)).any()
    assert ((ratio > 1 / 8 + 1e-9) & (ratio < 1 - 1e-9)).any()
