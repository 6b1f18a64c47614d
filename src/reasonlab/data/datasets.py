"""Loaders for the shipped data sets (GSM8K, MATH, MATH500, SVAMP, AdvBench) and SkillMath.

Every loader returns :class:`~reasonlab.data.problem.Problem` records. Files are read from the
project's ``data/`` folder (``<repo>/data``), or from ``$REASONLAB_DATA`` when that is set.
``load_dataset("nope")`` fails with the list of known names; a malformed JSONL line fails naming
the file and line number; a missing file fails naming the path.
"""

from __future__ import annotations

import csv
import itertools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from reasonlab.data.answers import last_boxed
from reasonlab.data.problem import Problem

DATA_ENV = "REASONLAB_DATA"


def data_dir() -> Path:
    """The data folder: ``$REASONLAB_DATA`` if set, else ``data/`` at the repository root
    (else ``<prefix>/share/reasonlab/data`` for an installed copy that ships it there)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[3] / "data"
    installed = Path(sys.prefix) / "share" / "reasonlab" / "data"
    return installed if not repo.is_dir() and installed.is_dir() else repo


def _level(v: Any) -> int | None:
    m = re.search(r"\d+", str(v)) if v is not None else None
    return int(m.group(0)) if m else None


def _num_text(v: Any) -> str:
    f = float(v)
    return str(int(f)) if f == int(f) else repr(f)


def _need(rec: dict[str, Any], keys: Iterable[str], path: Path, i: int) -> None:
    missing = [k for k in keys if k not in rec]
    if missing:
        raise ValueError(f"{path} record {i}: missing key(s) {missing}; has {sorted(rec)}")


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    from reasonlab.runs import read_jsonl

    return enumerate(read_jsonl(path), 1)


def _gsm8k(path: Path, split: str) -> Iterator[Problem]:
    for i, r in _jsonl(path):
        _need(r, ("question", "answer"), path, i)
        ans = r["answer"].rsplit("####", 1)[-1].strip() if "####" in r["answer"] else ""
        if not ans:
            raise ValueError(f"{path} record {i}: answer lacks a '#### N' line")
        yield Problem(id=f"gsm8k-{split}-{i - 1:05d}", question=r["question"].strip(),
                      solution=r["answer"], answer=ans, skills=[], source="gsm8k")


def _math(path: Path, split: str, source: str) -> Iterator[Problem]:
    for i, r in _jsonl(path):
        _need(r, ("problem", "solution"), path, i)
        subject = r.get("subject") or r.get("type")
        ans = r.get("answer")
        if ans is None:
            ans = last_boxed(r["solution"])
        if ans is None:
            raise ValueError(f"{path} record {i}: no 'answer' key and no \\boxed{{}} in the solution")
        pid = r.get("unique_id") or f"{source}-{split}-{i - 1:05d}"
        yield Problem(id=pid, question=r["problem"], solution=r["solution"], answer=str(ans),
                      skills=[subject] if subject else [], source=source,
                      difficulty=_level(r.get("level")), subject=subject)


def _svamp(path: Path, split: str) -> Iterator[Problem]:
    for i, r in _jsonl(path):
        _need(r, ("Body", "Question", "Answer"), path, i)
        ans = _num_text(r["Answer"])
        eq = str(r.get("Equation", "")).strip()
        sol = f"{eq} = {ans}\nThe answer is {ans}." if eq else f"The answer is {ans}."
        t = r.get("Type")
        body, q = r["Body"].strip(), r["Question"].strip()
        if body and body[-1] not in ".?!,":  # "... into 93 groups" + "How big ..."
            body = body + ","
            if q.split(" ", 1)[0] in ("How", "What", "Which", "Who", "When", "Where", "Why"):
                q = q[:1].lower() + q[1:]
        yield Problem(id=str(r.get("ID", f"svamp-{split}-{i - 1:05d}")),
                      question=f"{body} {q}", solution=sol,
                      answer=ans, skills=[t] if t else [], source="svamp", subject=t)


def _advbench(path: Path, split: str) -> Iterator[Problem]:
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        need = ["goal", "target"] if split == "behaviors" else ["target"]
        if reader.fieldnames is None or any(k not in reader.fieldnames for k in need):
            raise ValueError(f"{path}: CSV header must hold {need}, got {reader.fieldnames}")
        for i, r in enumerate(reader):
            q = r["goal"] if split == "behaviors" else r["target"]
            yield Problem(id=f"advbench-{split}-{i:04d}", question=q, solution=r["target"],
                          answer="", skills=[], source="advbench")


def _skillmath(split: str, config: Any = None) -> list[Problem]:
    from reasonlab.data.skillmath import SkillMathConfig, generate

    return generate(config or SkillMathConfig())[split]


@dataclass(frozen=True)
class DatasetSpec:
    splits: dict[str, str]  # split -> file relative to the data folder
    loader: Callable[[Path, str], Iterator[Problem]] | None
    default_split: str = "test"


DATASETS: dict[str, DatasetSpec] = {
    "gsm8k": DatasetSpec({"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"}, _gsm8k),
    "math": DatasetSpec({"test": "math/test.jsonl"}, lambda p, s: _math(p, s, "math")),
    "math500": DatasetSpec({"test": "math/math500.jsonl"}, lambda p, s: _math(p, s, "math500")),
    "svamp": DatasetSpec({"test": "svamp/test.jsonl"}, _svamp),
    "advbench": DatasetSpec({"behaviors": "advbench/harmful_behaviors.csv",
                             "strings": "advbench/harmful_strings.csv"}, _advbench, "behaviors"),
    "skillmath": DatasetSpec({s: "" for s in
                              ("train", "val", "test", "test_template", "test_pair")}, None),
}


def known_datasets() -> list[str]:
    return list(DATASETS)


def load_dataset(name: str, split: str | None = None, limit: int | None = None, *,
                 root: str | Path | None = None, config: Any = None) -> list[Problem]:
    """Problems of data set ``name`` (``split`` defaults to its test split), at most ``limit``.

    ``root`` overrides the data folder; ``config`` is a ``SkillMathConfig`` for ``skillmath``.
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(DATASETS)}")
    spec = DATASETS[key]
    split = split or spec.default_split
    if split not in spec.splits:
        raise ValueError(f"data set {key!r} has no split {split!r}; known splits: "
                         f"{', '.join(spec.splits)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if spec.loader is None:
        probs = _skillmath(split, config)
        return probs[:limit] if limit is not None else probs
    path = Path(root) if root is not None else data_dir()
    it = spec.loader(path / spec.splits[split], split)
    return list(itertools.islice(it, limit))
