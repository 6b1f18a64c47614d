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
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n{% endif %}"
)


def build_tiny_tokenizer(vocab_size: int = 300):
    """Byte-level BPE trained on a few sentences, with Llama-3-style special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(TINY_CORPUS, trainer=trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
        special_tokens=[("<|begin_of_text|>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                   eos_token="<|end_of_text|>", pad_token="<|pad|>",
                                   chat_template=CHAT_TEMPLATE)


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
