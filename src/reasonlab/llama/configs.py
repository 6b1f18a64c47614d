"""Llama 3 presets (arXiv:2407.21783, Table 3) and the tiny herd, as ``transformers.LlamaConfig``.

Every value is set explicitly: HF defaults differ from Llama 3 (eps 1e-6, theta 10000).
The FFN width follows the reference rule in meta-llama/llama-models ``args.py``::

    h = int(2 * 4 * dim / 3); h = int(ffn_dim_multiplier * h); h = multiple_of * ceil(h / multiple_of)

The tiny herd uses the same rules (GQA, RoPE theta 500000, eps 1e-5, untied embeddings) at small
widths so it trains on a CPU in minutes; the micro shapes go below it for IsoFLOP sweeps on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from transformers import LlamaConfig

LLAMA3_VOCAB = 128_256
LLAMA3_ROPE_THETA = 500_000.0
LLAMA31_ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def ffn_hidden_dim(dim: int, ffn_dim_multiplier: float, multiple_of: int) -> int:
    """The Llama 3 FFN width rule (llama-models ``FeedForward``)."""
    h = int(2 * 4 * dim / 3)
    h = int(ffn_dim_multiplier * h)
    return multiple_of * math.ceil(h / multiple_of)


@dataclass(frozen=True)
class Shape:
    """The architecture numbers that define one size."""

    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    ffn_dim_multiplier: float
    multiple_of: int
    peak_lr: float
    head_dim: int | None = None  # default dim // n_heads


_LLAMA3 = {
    "8b": Shape(32, 4096, 32, 8, 1.3, 1024, 3e-4),
    "70b": Shape(80, 8192, 64, 8, 1.3, 4096, 1.5e-4),
    "405b": Shape(126, 16384, 128, 8, 1.2, 4096, 8e-5),
}

# The tiny herd: same rules, small widths. Names give the approximate size at vocab 512.
TINY_HERD = {
    "tiny-0.5m": Shape(3, 112, 4, 2, 1.3, 32, 3e-3),
    "tiny-1m": Shape(3, 128, 4, 2, 1.3, 32, 3e-3),
    "tiny-2m": Shape(4, 192, 6, 2, 1.3, 64, 3e-3),
    "tiny-5m": Shape(6, 256, 8, 2, 1.3, 64, 2e-3),
    "tiny-10m": Shape(8, 320, 8, 2, 1.3, 64, 1.5e-3),
    "tiny-20m": Shape(8, 448, 8, 2, 1.3, 64, 1e-3),
}

# Micro shapes below the herd, same rules; names give the non-embedding size. On a CPU the
# compute-optimal size at affordable budgets (3e10-1e12 FLOPs) is 10k-100k parameters, far below
# tiny-0.5m, so IsoFLOP curves (llama/scaling.py) need these to have their minimum inside the sizes.
MICRO_SHAPES = {
    "micro-0.008m": Shape(2, 16, 2, 1, 1.3, 16, 3e-3),
    "micro-0.015m": Shape(2, 24, 2, 1, 1.3, 16, 3e-3),
    "micro-0.03m": Shape(2, 32, 2, 1, 1.3, 16, 3e-3),
    "micro-0.06m": Shape(2, 48, 2, 1, 1.3, 16, 3e-3),
    "micro-0.1m": Shape(2, 64, 2, 1, 1.3, 16, 3e-3),
    "micro-0.25m": Shape(3, 80, 2, 1, 1.3, 16, 3e-3),
}
_SMALL = {**MICRO_SHAPES, **TINY_HERD}


def _llama_config(shape: Shape, *, vocab_size: int, max_position_embeddings: int,
                  rope_scaling: dict | None, bos_token_id: int, eos_token_id: int | list[int],
                  pad_token_id: int | None) -> LlamaConfig:
    rope = {"rope_type": "default", "rope_theta": LLAMA3_ROPE_THETA}
    if rope_scaling is not None:
        rope = {**rope_scaling, "rope_theta": LLAMA3_ROPE_THETA}
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.dim,
        intermediate_size=ffn_hidden_dim(shape.dim, shape.ffn_dim_multiplier, shape.multiple_of),
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_kv_heads,
        head_dim=shape.head_dim or shape.dim // shape.n_heads,
        hidden_act="silu",
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-5,
        rope_parameters=rope,
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        initializer_range=0.02,
    )
    return cfg


def known_presets() -> list[str]:
    names = []
    for size in _LLAMA3:
        names += [f"llama3-{size}", f"llama3.1-{size}"]
    return names + list(TINY_HERD) + list(MICRO_SHAPES)


def preset_shape(name: str) -> Shape:
    key = name.lower()
    if key in _SMALL:
        return _SMALL[key]
    for prefix in ("llama3.1-", "llama3-"):
        if key.startswith(prefix) and key[len(prefix):] in _LLAMA3:
            return _LLAMA3[key[len(prefix):]]
    raise KeyError(f"unknown preset '{name}'; known presets: {', '.join(known_presets())}")


def preset(name: str, *, vocab_size: int | None = None, max_position_embeddings: int | None = None,
           bos_token_id: int | None = None, eos_token_id: int | list[int] | None = None,
           pad_token_id: int | None = None) -> LlamaConfig:
    """A ``LlamaConfig`` for a named preset.

    ``llama3-8b/70b/405b`` are Llama 3.0 (context 8192, plain RoPE); ``llama3.1-*`` add the llama3
    RoPE scaling (factor 8) and context 131072. ``tiny-*`` and ``micro-*`` take the tokenizer's ``vocab_size``
    (default 512) and a context of 512 unless told otherwise. Special-token ids default to
    Llama 3's (128000/128001) for the full presets; pass the tokenizer's for the tiny herd.
    """
    shape = preset_shape(name)  # raises with the known names
    key = name.lower()
    if key in _SMALL:
        return _llama_config(shape, vocab_size=vocab_size or 512,
                             max_position_embeddings=max_position_embeddings or 512,
                             rope_scaling=None, bos_token_id=bos_token_id,
                             eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    is_31 = key.startswith("llama3.1-")
    bos_token_id = 128_000 if bos_token_id is None else bos_token_id
    eos_token_id = 128_001 if eos_token_id is None else eos_token_id
    return _llama_config(
        shape,
        vocab_size=vocab_size or LLAMA3_VOCAB,
        max_position_embeddings=max_position_embeddings or (131_072 if is_31 else 8192),
        rope_scaling=LLAMA31_ROPE_SCALING if is_31 else None,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )


def count_non_embedding(model: Any) -> int:
    """Parameters of ``model`` without its input and output embeddings (counted once when tied):
    the N of Kaplan et al. 2020 scaling laws."""
    emb = {id(m.weight): m.weight.numel()
           for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    return sum(p.numel() for p in model.parameters()) - sum(emb.values())


def count_parameters(config: LlamaConfig, *, non_embedding: bool = False) -> int:
    """Parameters of ``LlamaForCausalLM(config)`` (all, or without the embeddings), built on the
    meta device (no allocation)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return count_non_embedding(model) if non_embedding else sum(p.numel() for p in model.parameters())


def peak_lr(name: str) -> float:
    """The paper's peak learning rate for a preset (tiny herd: ours, tuned on CPU)."""
    return preset_shape(name).peak_lr
