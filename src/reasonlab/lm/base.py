"""The one model interface every method talks to (DESIGN.md principle 2).

Implementations: :class:`reasonlab.lm.local.LocalLM` (any HF causal LM from a local directory)
and an OpenAI-compatible HTTP client. Methods that need gradients take the local torch model.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass
class Generation:
    """One sampled continuation of a prompt."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # per generated token, model's log p
    finish_reason: str = "length"  # "stop" (stop string/token) or "length"
    stop_reason: str | int | None = None  # the stop string matched, or the stop token id

    @property
    def logprob(self) -> float:
        return float(sum(self.logprobs))


@dataclass
class ScoredContinuation:
    """Teacher-forced log-probabilities of a continuation given a prompt."""

    token_ids: list[int]
    token_logprobs: list[float]
    mask: list[bool]  # which tokens count in ``total``

    @property
    def total(self) -> float:
        return float(sum(lp for lp, m in zip(self.token_logprobs, self.mask) if m))

    @property
    def num_tokens(self) -> int:
        return int(sum(self.mask))


class LanguageModel(abc.ABC):
    """Generate, score and chat. All methods are batched over prompts."""

    @abc.abstractmethod
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 128,
                 temperature: float = 0.0, top_p: float = 1.0,
                 stop: Sequence[str] | None = None, seed: int | None = None) -> list[Generation]:
        """One continuation per prompt; ``temperature=0`` is greedy. Text ends before a stop string.
        For K samples of a prompt, pass it K times."""

    @abc.abstractmethod
    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[ScoredContinuation]:
        """log p(continuation | prompt) per token, teacher-forced."""

    @abc.abstractmethod
    def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """Render a conversation as the model's prompt text."""

    def chat(self, conversations: Sequence[Sequence[Message]], **gen_kwargs) -> list[Generation]:
        """Generate the assistant's reply to each conversation."""
        prompts = [self.apply_chat_template(c) for c in conversations]
        return self.generate(prompts, **gen_kwargs)

    def complete(self, prompts: Sequence[str], **gen_kwargs) -> list[str]:
        """Texts only (convenience over :meth:`generate`)."""
        return [g.text for g in self.generate(prompts, **gen_kwargs)]


def check_sampling_args(max_new_tokens: int, temperature: float, top_p: float) -> None:
    """The one check of generation arguments every :class:`LanguageModel` applies."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def generate_in_batches(model: "LanguageModel", prompts: Sequence[str], *, k: int = 1,
                        batch_size: int = 16, seed: int = 0, desc: str = "generate",
                        unit: str = "prompt", progress: bool = True,
                        **generate_kwargs: Any) -> Iterator[tuple[int, list[list[Generation]]]]:
    """``k`` generations per prompt, ``batch_size`` prompts per ``model.generate`` call.

    Yields ``(start, groups)``: the index of the batch's first prompt and, per prompt of the
    batch, its ``k`` generations. Batch ``b`` is generated with ``seed + b``, so sampled runs
    repeat exactly; a progress bar counts prompts.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=len(prompts), desc=desc, unit=unit, disable=not progress)
    for b, start in enumerate(range(0, len(prompts), batch_size)):
        batch = prompts[start:start + batch_size]
        rows = [pr for pr in batch for _ in range(k)]
        gens = model.generate(rows, seed=seed + b, **generate_kwargs)
        if len(gens) != len(rows):
            raise RuntimeError(f"model returned {len(gens)} generations for {len(rows)} prompts")
        yield start, [list(gens[i * k:(i + 1) * k]) for i in range(len(batch))]
        bar.update(len(batch))
    bar.close()
