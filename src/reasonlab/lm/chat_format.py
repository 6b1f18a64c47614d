"""The Llama 3 chat format in one place: special tokens, stop tokens, formatting-token ids.

Llama 3 (arXiv:2407.21783 §4.1.1; meta-llama/llama-models ``chat_format.py`` and
``tokenizer.py``) writes a conversation as ``<|begin_of_text|>`` then, per message,
``<|start_header_id|>ROLE<|end_header_id|>\\n\\nCONTENT<|eot_id|>``, and ends a prompt with the
assistant header. A generation ends at ``<|eot_id|>`` (end of turn), ``<|eom_id|>`` (end of
message, tool calls) or ``<|end_of_text|>``. The tokenizer (``llama/tokenizer.py``), the
generation loop (``lm/local.py``), SFT and DPO (formatting tokens masked out of the log-ratios)
and the Llama Guard prompt all take these from here.
"""

from __future__ import annotations

from typing import Any

BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
EOM = "<|eom_id|>"
PYTHON_TAG = "<|python_tag|>"
PAD = "<|finetune_right_pad_id|>"

# Tokens that end a generation, and the chat formatting tokens (no content of their own).
STOP_TOKENS = (END_OF_TEXT, EOM, EOT)
FORMATTING_TOKENS = (BEGIN_OF_TEXT, START_HEADER, END_HEADER, EOT, EOM)

# The Llama 3 chat template (llama-models chat_format.py); the system block only when given.
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '" + START_HEADER + "' + message['role'] + '" + END_HEADER + "\\n\\n' + message['content'] + '"
    + EOT + "' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '" + START_HEADER + "assistant" + END_HEADER + "\\n\\n' }}"
    "{%- endif %}"
)


def header(role: str) -> str:
    """The header that opens a message of ``role``: ``<|start_header_id|>role<|end_header_id|>\\n\\n``."""
    return f"{START_HEADER}{role}{END_HEADER}\n\n"


def _ids(tokenizer: Any, tokens: tuple[str, ...]) -> list[int]:
    vocab = tokenizer.get_vocab()
    return [int(vocab[t]) for t in tokens if t in vocab]


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Ids that end a generation: end_of_text, eom, eot where the vocabulary has them, and eos."""
    ids = _ids(tokenizer, STOP_TOKENS)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def formatting_token_ids(tokenizer: Any) -> list[int]:
    """Chat formatting tokens (headers, eot, eom, bos) — masked out of DPO log-ratios."""
    return _ids(tokenizer, FORMATTING_TOKENS)


def end_of_turn_id(tokenizer: Any, prompt: str) -> int | None:
    """``<|eot_id|>`` after a chat-formatted prompt (one holding a header), else end-of-text."""
    vocab = tokenizer.get_vocab()
    if START_HEADER in prompt and EOT in vocab:
        return int(vocab[EOT])
    return tokenizer.eos_token_id
