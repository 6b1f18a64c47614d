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


DATA_PREFIX = "data:"


def data_set_name(spec: str, key: str = "corpus") -> str | None:
    """The data set ``spec`` names, or None when it is a path. ``data:NAME`` is always a data set;
    a spec with a folder separator or a file suffix is always a path; a bare known name is the
    data set, unless a file or folder of that name exists too: then both readings are named and
    the user picks one."""
    from reasonlab.data.datasets import known_datasets

    if spec.startswith(DATA_PREFIX):
        return spec[len(DATA_PREFIX):]
    if "/" in spec or "\\" in spec or Path(spec).suffix:
        return None
    if spec.lower() in known_datasets():
        if Path(spec).exists():
            raise ValueError(f"{key} {spec!r} is both a data set name and the path "
                             f"{Path(spec).resolve()}; write {DATA_PREFIX}{spec} for the data set "
                             f"or ./{spec} for the path")
        return spec
    return None


def load_corpus(spec: str, *, limit: int | None = None, seed: int = 0) -> list[str]:
    """``spec`` is a file path, or a data set name (``skillmath``, ``gsm8k``, or ``data:NAME``)
    whose training questions and reference solutions become documents."""
    name = data_set_name(spec)
    if name is None:
        if Path(spec).is_dir():
            raise ValueError(f"corpus {spec!r} is a folder; give a .txt or .jsonl file "
                             "(or data:NAME for a data set)")
        docs = read_documents(spec)
    else:
        from reasonlab.data.datasets import load_dataset

        docs = [f"{p.question}\n{p.solution}" for p in load_dataset(name, split="train", limit=limit)]
    return docs[:limit] if limit else docs
