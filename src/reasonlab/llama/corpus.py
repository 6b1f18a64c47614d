"""Text corpora for pre-training: a file of documents or a named data set."""

from __future__ import annotations

from pathlib import Path

from reasonlab.runs import read_jsonl


def read_documents(path: str | Path) -> list[str]:
    """Documents from a ``.jsonl`` file (field ``text``) or a text file (blank-line separated)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"corpus file not found: {p}")
    if p.suffix == ".jsonl":
        docs = []
        for i, rec in enumerate(read_jsonl(p), 1):
            if not isinstance(rec.get("text"), str):
                raise ValueError(f"{p} record {i}: expected a string field 'text'")
            docs.append(rec["text"])
    else:
        docs = [d.strip() for d in p.read_text().split("\n\n") if d.strip()]
    if not docs:
        raise ValueError(f"corpus file {p} holds no documents")
    return docs


def load_corpus(spec: str, *, limit: int | None = None, seed: int = 0) -> list[str]:
    """``spec`` is a file path, or a data set name (``skillmath``, ``gsm8k``, …) whose questions
    and reference solutions become documents."""
    if Path(spec).suffix in (".txt", ".jsonl", ".md") or Path(spec).exists():
        docs = read_documents(spec)
    else:
        from reasonlab.data.datasets import load_dataset

        docs = [f"{p.question}\n{p.solution}" for p in load_dataset(spec, split="train", limit=limit)]
    return docs[:limit] if limit else docs
