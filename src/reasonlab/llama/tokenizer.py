"""Byte-level BPE tokenizers with the Llama 3 special tokens and chat format.

Llama 3 uses a 128K tiktoken BPE (arXiv:2407.21783 §3.1) that cannot be fetched here, so we train
our own byte-level BPE with HF ``tokenizers`` and give it Llama 3's special tokens, their roles and
its chat template. Digits: Llama 3 splits numbers into groups of 1–3 digits; tiny models learn
arithmetic far better with one digit per token, so ``digits`` chooses ``"single"``, ``"groups3"`` or
``"none"``. A real Llama 3 tokenizer directory loads with :func:`load_tokenizer` as well. The
special tokens and the chat format come from :mod:`reasonlab.lm.chat_format`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from reasonlab.lm.chat_format import (  # noqa: F401 (stop_token_ids, formatting_token_ids: public here too)
    BEGIN_OF_TEXT, END_HEADER, END_OF_TEXT, EOM, EOT, LLAMA3_CHAT_TEMPLATE, PAD, PYTHON_TAG,
    START_HEADER, formatting_token_ids, stop_token_ids,
)
from reasonlab.lm.portable import make_portable, note_if_legacy

# The Llama 3 special-token layout (tokenizer.py of meta-llama/llama-models): ids follow the BPE
# vocabulary in this order; the rest are reserved tokens.
LLAMA3_SPECIAL_TOKENS = [
    BEGIN_OF_TEXT, END_OF_TEXT,
    "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    PAD, "<|step_id|>", START_HEADER, END_HEADER, EOM, EOT, PYTHON_TAG,
]
DIGIT_MODES = ("single", "groups3", "none")


def _pre_tokenizer(digits: str) -> pre_tokenizers.PreTokenizer:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if digits == "single":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if digits == "groups3":
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r"\d{1,3}"), behavior="isolated"), byte_level])
    return byte_level


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 512, digits: str = "single",
                    min_frequency: int = 2, n_reserved: int = 5,
                    out_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` with the Llama 3 special tokens and chat template.

    ``vocab_size`` counts the 256 byte symbols, the merges and the special tokens; at its minimum
    (256 + specials) no merges are learned and every character is one token.
    """
    if digits not in DIGIT_MODES:
        raise ValueError(f"digits='{digits}' is not one of {list(DIGIT_MODES)}")
    specials = LLAMA3_SPECIAL_TOKENS + [
        f"<|reserved_special_token_{i}|>" for i in range(2, 2 + n_reserved)]
    min_size = 256 + len(specials)
    if vocab_size < min_size:
        raise ValueError(f"vocab_size={vocab_size} is below the minimum {min_size} "
                         f"(256 bytes + {len(specials)} special tokens)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer(digits)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(specials), min_frequency=min_frequency, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(specials)  # ids after the BPE vocabulary, as in Llama 3
    bos_id = tok.token_to_id(BEGIN_OF_TEXT)
    # Like Llama 3's HF tokenizer: ``tokenizer(text)`` prepends <|begin_of_text|>.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BEGIN_OF_TEXT} $A", pair=f"{BEGIN_OF_TEXT} $A $B",
        special_tokens=[(BEGIN_OF_TEXT, bos_id)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BEGIN_OF_TEXT, eos_token=END_OF_TEXT, pad_token=PAD,
        chat_template=LLAMA3_CHAT_TEMPLATE, model_max_length=1_000_000, clean_up_tokenization_spaces=False)
    fast.add_special_tokens({"additional_special_tokens": [s for s in specials
                                                           if s not in (BEGIN_OF_TEXT, END_OF_TEXT, PAD)]})
    fast.init_kwargs["digits"] = digits
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
        make_portable(out_dir)
    return fast


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer directory (ours or a real Llama 3 one) from local files only."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {p}")
    note_if_legacy(p)
    return AutoTokenizer.from_pretrained(str(p), local_files_only=True)


def load_or_train_tokenizer(out_dir: str | Path, texts: Iterable[str], *, vocab_size: int,
                            digits: str = "single", save: bool = True) -> PreTrainedTokenizerFast:
    """The tokenizer of a run directory: ``out_dir`` is loaded when it holds one (a resumed run
    keeps the tokenizer it trained before); otherwise one is trained on ``texts`` and, with
    ``save``, written to ``out_dir`` atomically (a temp folder renamed into place)."""
    d = Path(out_dir)
    if (d / "tokenizer.json").exists():
        return load_tokenizer(d)
    tok = train_tokenizer(texts, vocab_size=vocab_size, digits=digits)
    if save:
        tmp = d.with_name(f".{d.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tok.save_pretrained(str(tmp))
        make_portable(tmp)
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
    return tok


def encode_document(tokenizer, text: str) -> list[int]:
    """``<|begin_of_text|>`` + text + end-of-text: one pretraining document."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return ([bos] if bos is not None else []) + ids + ([eos] if eos is not None else [])
