"""Supervised fine-tuning on prompt→completion pairs, loss on the completion only.

Llama 3 post-training SFT (arXiv:2407.21783 §4.1.3): the loss covers assistant tokens only. Each
pair is one packed document (never split across rows) whose target mask is the completion and the
end-of-turn token. Chat data: render the conversation with :func:`chat_pair`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from reasonlab.config import ConfigError
from reasonlab.llama.packing import Document
from reasonlab.llama.pretrain import train_on_documents
from reasonlab.llama.trainer import TrainConfig, TrainState
from reasonlab.lm.base import Message
from reasonlab.lm.chat_format import end_of_turn_id


@dataclass
class SFTConfig(TrainConfig):
    """SFT: start from ``init_from`` (or a fresh preset) with a smaller LR and no document splits."""

    lr: float | None = 1e-3
    warmup_steps: int = 20
    max_steps: int = 300


def pair_document(tokenizer, prompt: str, completion: str) -> Document:
    """[bos?] prompt completion eos, with targets on the completion and eos only.

    The prompt is tokenized as is (a chat-rendered prompt already starts with bos); a plain prompt
    gets the tokenizer's bos.
    """
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and (not p_ids or p_ids[0] != bos):
        p_ids = [bos] + p_ids
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    end = end_of_turn_id(tokenizer, prompt)
    ids = p_ids + c_ids + ([end] if end is not None else [])
    mask = [False] * len(p_ids) + [True] * (len(ids) - len(p_ids))
    return Document(ids, mask)


def chat_pair(tokenizer, messages: Sequence[Message]) -> tuple[str, str]:
    """Split a conversation ending with an assistant turn into (rendered prompt, reply)."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("chat_pair: the conversation must end with an assistant message")
    prompt = tokenizer.apply_chat_template(list(messages[:-1]), tokenize=False, add_generation_prompt=True)
    return prompt, messages[-1]["content"]


def sft(cfg: SFTConfig, tokenizer, pairs: Sequence[tuple[str, str]], out_dir: str | Path,
        val_pairs: Sequence[tuple[str, str]] | None = None, *,
        on_step: Callable[[TrainState], None] | None = None, run: Any = None) -> dict:
    """Fine-tune on (prompt, completion) pairs; writes a run directory with ``model/``
    (``run``: a :class:`reasonlab.runs.Run` the caller opened on ``out_dir``)."""
    if not pairs:
        raise ConfigError("sft: no training pairs")
    train_docs = [pair_document(tokenizer, p, c) for p, c in pairs]
    val_docs = [pair_document(tokenizer, p, c) for p, c in val_pairs] if val_pairs else None
    return train_on_documents(cfg, tokenizer, train_docs, val_docs, out_dir, split_documents=False,
                              on_step=on_step, name="sft", run=run)
