"""Model calls with lenient parsing and counted retries, shared by the skill pipelines.

A reply is read leniently (:func:`reply_field` accepts ``Skill: x``, ``**Skill**: x``,
``- skill = x``); a reply that still cannot be read is asked again with a new seed, up to
``max_retries`` times, and then dropped. Retries change the request's seed, so each retry is a
new cached request and a rerun replays the same retries from the cache (no new calls).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from reasonlab.skills import prompts as P


@dataclass
class CallStats:
    """What the calls of one stage cost: replies asked for, retries, unreadable replies, drops."""

    calls: int = 0
    retries: int = 0
    malformed: int = 0
    dropped: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def add(self, other: "CallStats") -> None:
        self.calls += other.calls
        self.retries += other.retries
        self.malformed += other.malformed
        self.dropped += other.dropped
        for k, v in other.extra.items():
            self.extra[k] = self.extra.get(k, 0) + v

    def as_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "retries": self.retries, "malformed": self.malformed,
                "dropped": self.dropped, **self.extra}


def reply_field(text: str, name: str) -> str | None:
    """The value of a ``Name: value`` line (case-insensitive, markdown marks ignored); for the
    last field of a reply the value runs to the end of the text."""
    pat = re.compile(rf"^[\s>*_#-]*{re.escape(name)}[\s*_]*[:=][\s*_]*(.*)$", re.I | re.M)
    m = pat.search(text or "")
    if m is None:
        return None
    value = m.group(1).strip().strip("*_`\"' ")
    return value or None


def reply_block(text: str, name: str, next_names: Sequence[str]) -> str | None:
    """A field's value that may span several lines, up to the next of ``next_names``."""
    pat = re.compile(rf"^[\s>*_#-]*{re.escape(name)}[\s*_]*:[\s*_]*", re.I | re.M)
    m = pat.search(text or "")
    if m is None:
        return None
    rest = text[m.end():]
    ends = [e.start() for n in next_names
            for e in [re.search(rf"^[\s>*_#-]*{re.escape(n)}[\s*_]*:", rest, re.I | re.M)] if e]
    value = rest[:min(ends)] if ends else rest
    return value.strip() or None


def snake(name: str) -> str:
    """``"Circle Properties - Area"`` -> ``circle_properties_area``."""
    return re.sub(r"[^a-z0-9]+", "_", (name or "").lower()).strip("_")


def parse_int(text: str | None) -> int | None:
    """The first integer in ``text`` (commas inside numbers ignored), else None."""
    if not text:
        return None
    m = re.search(r"-?\d[\d,]*", text)
    if m is None:
        return None
    try:
        return int(m.group(0).replace(",", ""))
    except ValueError:
        return None


def tagged(text: str, tag: str) -> list[str]:
    """The contents of every ``<tag>...</tag>`` block of a prompt."""
    return [m.strip() for m in re.findall(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.S)]


def chat_messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": P.SYSTEM}, {"role": "user", "content": prompt}]


def ask(model: Any, prompts: Sequence[str], parse: Callable[[str], Any], *, seed: int,
        max_retries: int, stats: CallStats, max_new_tokens: int = 512,
        temperature: float = 1.0) -> list[Any]:
    """One parsed reply per prompt (a prompt given k times gets k samples); ``parse`` returns
    None for an unreadable reply, which is asked again with seed ``seed + 1000 * attempt``;
    still None after ``max_retries`` retries: dropped (None in the output)."""
    out: list[Any] = [None] * len(prompts)
    todo = list(range(len(prompts)))
    for attempt in range(max_retries + 1):
        if not todo:
            break
        if attempt:
            stats.retries += len(todo)
        gens = model.chat([chat_messages(prompts[i]) for i in todo], max_new_tokens=max_new_tokens,
                          temperature=temperature, seed=seed + 1000 * attempt)
        stats.calls += len(todo)
        left = []
        for i, g in zip(todo, gens):
            value = parse(g.text)
            if value is None:
                stats.malformed += 1
                left.append(i)
            else:
                out[i] = value
        todo = left
    stats.dropped += len(todo)
    return out
