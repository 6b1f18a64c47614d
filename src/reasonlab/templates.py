"""Prompt templates with the PTST names, rendered through any model's chat format.

"Keeping LLMs Aligned After Fine-tuning: The Crucial Role of Prompt Templates" (Lyu et al.,
arXiv:2402.18540, §3 and Table 1; code ``vfleaking/PTST``, ``prompt_utils.py``) fine-tunes and
tests chat models with seven templates. A template here is either plain text (``text:*``: no chat
format at all) or a system prompt plus a user-turn wording (``chat:*``) that a *chat format* turns
into the prompt string:

============== ======================================================= ===========================
name           user turn                                               system prompt
============== ======================================================= ===========================
text:vanilla   ``Question: {q}\\nAnswer:`` (plain text)                 —
text:alpaca    the Alpaca instruction text (plain text)                —
chat:vanilla   ``Question: {q}``                                       none
chat:alpaca    ``### Instruction:\\n{q}\\n\\n### Response:\\n``            the Alpaca preamble
chat:llama     ``Question: {q}``                                       Llama 2's safety prompt
chat:llama-short ``Question: {q}``                                     its first two sentences
chat:mpt       ``Question: {q}``                                       MPT's chat prompt
============== ======================================================= ===========================

Chat formats (:data:`CHAT_FORMATS`): ``llama2`` (``[INST] <<SYS>>\\n...\\n<</SYS>>\\n\\n... [/INST]``
exactly as PTST's code writes it, BOS left to the tokenizer), ``llama3`` (header tokens,
``<|begin_of_text|>`` first, as Meta's and the project's chat template write it), ``mistral``
(the Mistral-7B-Instruct chat template: ``<s> [INST] SYSTEM\\n\\nUSER [/INST]``) and ``ours`` (the
project's tiny models: the Llama 3 chat template of :mod:`reasonlab.lm.chat_format`). Any
tokenizer (or :class:`reasonlab.lm.base.LanguageModel`) with ``apply_chat_template`` is a format
too: :func:`render` accepts it in place of a name.

Users add templates from YAML (:func:`load_templates`)::

    chat:pirate:
      user: "Arr, {question}"
      system: "You are a safe pirate."
    text:qa2:
      text: "Q: {question}\\nA:"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from reasonlab.lm.chat_format import BEGIN_OF_TEXT, EOT, header

# System prompts as PTST's prompt_utils.py writes them (LLAMA_BASE_PROMPT is Llama 2's default
# system prompt as one paragraph).
LLAMA_SAFETY_PROMPT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe. Your answers should not include any harmful, unethical, racist, sexist, "
    "toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased "
    "and positive in nature. If a question does not make any sense, or is not factually coherent, "
    "explain why instead of answering something not correct. If you don't know the answer to a "
    "question, please don't share false information.")
LLAMA_SHORT_PROMPT = ("You are a helpful, respectful and honest assistant. Always answer as "
                      "helpfully as possible, while being safe.")
MPT_PROMPT = ("A conversation between a user and an LLM-based AI assistant. The assistant gives "
              "helpful and honest answers.")
ALPACA_PREAMBLE = ("Below is an instruction that describes a task. Write a response that "
                   "appropriately completes the request.")

PLACEHOLDER = "{question}"


@dataclass(frozen=True)
class PromptTemplate:
    """A ``text`` template (``text`` holds ``{question}``) or a ``chat`` one (``user`` holds
    ``{question}``; ``system`` is the system prompt or None)."""

    name: str
    kind: str  # "text" | "chat"
    text: str | None = None
    user: str | None = None
    system: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("text", "chat"):
            raise ValueError(f"template {self.name!r}: kind must be 'text' or 'chat', got {self.kind!r}")
        body = self.text if self.kind == "text" else self.user
        other = self.user if self.kind == "text" else self.text
        field_name = "text" if self.kind == "text" else "user"
        if not isinstance(body, str) or body.count(PLACEHOLDER) != 1:
            raise ValueError(f"template {self.name!r}: '{field_name}' must be a string holding "
                             f"{PLACEHOLDER} exactly once")
        if other is not None or (self.kind == "text" and self.system is not None):
            raise ValueError(f"template {self.name!r}: a {self.kind} template takes only "
                             f"'{field_name}'" + (" and 'system'" if self.kind == "chat" else ""))
        if self.system is not None and not isinstance(self.system, str):
            raise ValueError(f"template {self.name!r}: 'system' must be a string")

    @property
    def has_safety_prompt(self) -> bool:
        return self.system in (LLAMA_SAFETY_PROMPT, LLAMA_SHORT_PROMPT)

    def user_turn(self, question: str) -> str:
        return (self.user or "").replace(PLACEHOLDER, question)

    def messages(self, question: str) -> list[dict[str, str]]:
        """The chat messages of a ``chat`` template (system first when there is one)."""
        if self.kind != "chat":
            raise ValueError(f"template {self.name!r} is plain text and has no chat messages")
        msgs = [{"role": "system", "content": self.system}] if self.system is not None else []
        return msgs + [{"role": "user", "content": self.user_turn(question)}]


_BUILTIN = [
    PromptTemplate("text:vanilla", "text", text="Question: {question}\nAnswer:"),
    PromptTemplate("text:alpaca", "text", text=ALPACA_PREAMBLE
                   + "\n\n### Instruction:\n{question}\n\n### Response:\n"),
    PromptTemplate("chat:vanilla", "chat", user="Question: {question}"),
    PromptTemplate("chat:alpaca", "chat", user="### Instruction:\n{question}\n\n### Response:\n",
                   system=ALPACA_PREAMBLE),
    PromptTemplate("chat:llama", "chat", user="Question: {question}", system=LLAMA_SAFETY_PROMPT),
    PromptTemplate("chat:llama-short", "chat", user="Question: {question}", system=LLAMA_SHORT_PROMPT),
    PromptTemplate("chat:mpt", "chat", user="Question: {question}", system=MPT_PROMPT),
]
PTST_TEMPLATES = tuple(t.name for t in _BUILTIN)
_REGISTRY: dict[str, PromptTemplate] = {t.name: t for t in _BUILTIN}


def template_names() -> list[str]:
    return list(_REGISTRY)


def get_template(name: str) -> PromptTemplate:
    if name not in _REGISTRY:
        raise KeyError(f"unknown prompt template {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def register_template(template: PromptTemplate, *, replace: bool = False) -> PromptTemplate:
    """Add a template; a taken name is an error unless ``replace`` (the built-ins never change)."""
    if template.name in PTST_TEMPLATES:
        raise ValueError(f"template {template.name!r} is a built-in PTST template and cannot be replaced")
    if template.name in _REGISTRY and not replace and _REGISTRY[template.name] != template:
        raise ValueError(f"a template named {template.name!r} is already registered")
    _REGISTRY[template.name] = template
    return template


def unregister_template(name: str) -> None:
    if name not in PTST_TEMPLATES:
        _REGISTRY.pop(name, None)


def template_from_dict(name: str, spec: Mapping[str, Any]) -> PromptTemplate:
    """``{"text": ...}`` or ``{"user": ..., "system": ...}`` (the kind follows the keys)."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"template {name!r} must be a mapping with 'text' or 'user' (and 'system')")
    unknown = set(spec) - {"text", "user", "system"}
    if unknown:
        raise ValueError(f"template {name!r}: unknown keys {sorted(unknown)}; allowed: text, user, system")
    kind = "text" if "text" in spec else "chat"
    return PromptTemplate(name, kind, text=spec.get("text"), user=spec.get("user"),
                          system=spec.get("system"))


def load_templates(path: str | Path, *, replace: bool = False) -> list[PromptTemplate]:
    """Register every template of a YAML file (name → spec); returns them."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"templates file not found: {p}")
    data = yaml.safe_load(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{p}: expected a mapping of template name -> {{text | user, system}}")
    made = [template_from_dict(str(name), spec) for name, spec in data.items()]
    return [register_template(t, replace=replace) for t in made]


# ---------------------------------------------------------------- chat formats
def _llama2(system: str | None, user: str) -> str:
    sys_block = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if system is not None else ""
    return f"[INST] {sys_block}{user} [/INST]"


def _llama3(system: str | None, user: str) -> str:
    sys_block = header("system") + system + EOT if system is not None else ""
    return BEGIN_OF_TEXT + sys_block + header("user") + user + EOT + header("assistant")


def _mistral(system: str | None, user: str) -> str:
    return "<s> [INST] " + (f"{system}\n\n" if system is not None else "") + user + " [/INST]"


def _ours(system: str | None, user: str) -> str:
    from jinja2 import Template

    from reasonlab.lm.chat_format import LLAMA3_CHAT_TEMPLATE

    msgs = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": user}]
    return Template(LLAMA3_CHAT_TEMPLATE).render(messages=msgs, bos_token=BEGIN_OF_TEXT,
                                                 add_generation_prompt=True)


CHAT_FORMATS: dict[str, Callable[[str | None, str], str]] = {
    "llama2": _llama2, "llama3": _llama3, "mistral": _mistral, "ours": _ours,
}

# What follows a reply in each format when training on it (the end of the assistant turn).
REPLY_END = {"llama2": " </s>", "llama3": EOT, "mistral": "</s>", "ours": EOT}


def render(template: str | PromptTemplate, question: str, chat_format: Any = "ours") -> str:
    """The prompt string of ``template`` for ``question`` in ``chat_format``: a name of
    :data:`CHAT_FORMATS` or any object with ``apply_chat_template`` (a tokenizer or a
    LanguageModel). ``text:*`` templates are plain text whatever the format."""
    t = get_template(template) if isinstance(template, str) else template
    if t.kind == "text":
        return (t.text or "").replace(PLACEHOLDER, question)
    if isinstance(chat_format, str):
        if chat_format not in CHAT_FORMATS:
            raise KeyError(f"unknown chat format {chat_format!r}; known: {', '.join(CHAT_FORMATS)} "
                           "or a tokenizer with a chat template")
        return CHAT_FORMATS[chat_format](t.system, t.user_turn(question))
    if not hasattr(chat_format, "apply_chat_template"):
        raise TypeError("chat_format must be a format name or have apply_chat_template")
    try:  # a transformers tokenizer
        return chat_format.apply_chat_template(t.messages(question), tokenize=False,
                                               add_generation_prompt=True)
    except TypeError:  # reasonlab.lm.base.LanguageModel
        return chat_format.apply_chat_template(t.messages(question), add_generation_prompt=True)


def render_all(question: str, chat_format: Any = "ours", names: list[str] | None = None) -> dict[str, str]:
    """Every (or the named) template rendered for one question."""
    return {n: render(n, question, chat_format) for n in (names or template_names())}
