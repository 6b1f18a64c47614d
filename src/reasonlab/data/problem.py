"""The one problem record shared by SkillMath and the public data sets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problem:
    """A question with its reference solution and final answer.

    ``answer`` is the reference final answer as text (SkillMath: a non-negative integer such as
    ``"17"``; MATH: LaTeX such as ``"\\frac{1}{2}"``). ``skills`` holds SkillMath skill names,
    or the subject / problem type of the public sets. ``difficulty`` is the SkillMath difficulty
    or the MATH level (``level`` is an alias).
    """

    id: str
    question: str
    solution: str
    answer: str
    skills: list[str] = field(default_factory=list)
    source: str = "skillmath"
    template: str = ""
    variant: int = 0
    difficulty: int | None = None
    subject: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def level(self) -> int | None:
        return self.difficulty

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Problem":
        """Build from a dict written by :meth:`to_dict` (extra keys such as ``split`` ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        missing = [k for k in ("id", "question", "solution", "answer") if k not in kw]
        if missing:
            raise ValueError(f"problem record lacks key(s) {missing}: {str(d)[:120]}")
        kw["answer"] = str(kw["answer"])
        return cls(**kw)
