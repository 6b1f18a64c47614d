"""Shared fixtures: a tiny byte-level BPE tokenizer and a tiny random Llama built on it."""

from __future__ import annotations

import os

import pytest
import torch

# Under ``pytest -n 2`` each worker gets one core: two torch threads per worker oversubscribe it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

TINY_CORPUS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "Step 1: 3 + 4 = 7.\nThe answer is 7.",
    "A train travels 60 km in 2 hours. What is its speed?",
    "Step 1: 60 / 2 = 30.\nThe answer is 30.",
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! Language models learn to reason step by step.",
    "Mia reads 12 pages a day for 5 days. Step 1: 12 * 5 = 60.\nThe answer is 60.",
]


def build_tiny_tokenizer(vocab_size: int = 340):
    """The project's byte-level BPE (Llama 3 special tokens and chat template) on a few sentences."""
    from reasonlab.llama.tokenizer import train_tokenizer

    return train_tokenizer(TINY_CORPUS, vocab_size=vocab_size, min_frequency=1)


def build_tiny_model(tokenizer, seed: int = 0, preset_name: str = "tiny-0.5m"):
    """A random ``LlamaForCausalLM`` from a tiny-herd preset sized to ``tokenizer``."""
    from transformers import LlamaForCausalLM

    from reasonlab.llama.configs import preset

    cfg = preset(preset_name, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    return build_tiny_model(tiny_tokenizer)
