"""The one problem record shared by SkillMath and the public data sets, and its JSONL files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
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


def write_splits(splits: dict[str, list[Problem]], out: str | Path) -> list[Path]:
    """Write problems as JSONL: ``out`` ending in .jsonl gets every split (with a ``split`` key);
    otherwise ``out`` is a folder with one ``{split}.jsonl`` per split. Atomic, byte-stable."""
    from reasonlab.runs import write_jsonl

    out = Path(out)
    if out.suffix == ".jsonl":
        recs = [{"split": s, **p.to_dict()} for s, ps in splits.items() for p in ps]
        write_jsonl(out, recs)
        return [out]
    paths = []
    for s, ps in splits.items():
        write_jsonl(out / f"{s}.jsonl", [p.to_dict() for p in ps])
        paths.append(out / f"{s}.jsonl")
    return paths


def read_problems(path: str | Path, split: str | None = None) -> list[Problem]:
    """Read problem JSONL (a split file, or the single file filtered by ``split``)."""
    from reasonlab.runs import read_jsonl

    out = []
    for i, rec in enumerate(read_jsonl(path), 1):
        if split is not None and rec.get("split", split) != split:
            continue
        try:
            out.append(Problem.from_dict(rec))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path} record {i}: {e}") from None
    return out
