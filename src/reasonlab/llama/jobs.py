"""Runner configs and entry points for the Llama 3 CLI commands (pretrain, sft)."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from reasonlab.config import check_choice, check_range
from reasonlab.llama.pretrain import PretrainConfig
from reasonlab.llama.sft import SFTConfig
from reasonlab.llama.tokenizer import DIGIT_MODES


@dataclass
class TokenizerSpec:
    """Reuse a tokenizer directory, or train a new byte-level BPE on the training corpus."""

    path: str | None = None
    vocab_size: int = 512
    digits: str = "single"

    def __post_init__(self) -> None:
        check_choice("tokenizer.digits", self.digits, DIGIT_MODES)
        check_range("tokenizer.vocab_size", self.vocab_size, 272)


@dataclass
class _Job:
    limit: int = 0  # at most this many documents / pairs (0 = all)
    val_fraction: float = 0.05
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)

    def __post_init__(self) -> None:
        check_range("val_fraction", self.val_fraction, 0.0, 0.5, lo_open=True)
        check_range("limit", self.limit, 0)


@dataclass
class PretrainJob(_Job):
    corpus: str = "skillmath"  # a .txt/.jsonl file or a data set name
    train: PretrainConfig = field(default_factory=PretrainConfig)


@dataclass
class SFTJob(_Job):
    data: str = "skillmath"  # JSONL of {"prompt","completion"} or a data set name
    train: SFTConfig = field(default_factory=SFTConfig)


def split_val(items: list, fraction: float, seed: int) -> tuple[list, list]:
    items = list(items)
    random.Random(seed).shuffle(items)
    n_val = max(1, int(len(items) * fraction))
    return items[n_val:], items[:n_val]


def get_tokenizer(spec: TokenizerSpec, texts: list[str], out_dir: Path):
    from reasonlab.llama.tokenizer import load_or_train_tokenizer, load_tokenizer

    if spec.path:
        return load_tokenizer(spec.path)
    # Deterministic, so every torchrun rank trains the same one; rank 0 saves it atomically.
    return load_or_train_tokenizer(out_dir / "tokenizer", texts, vocab_size=spec.vocab_size,
                                   digits=spec.digits, save=int(os.environ.get("RANK", "0")) == 0)


def run_pretrain_job(job: PretrainJob, out: str | Path) -> dict:
    from reasonlab.llama.corpus import load_corpus
    from reasonlab.llama.pretrain import pretrain

    out = Path(out)
    docs = load_corpus(job.corpus, limit=job.limit or None, seed=job.train.seed)
    train, val = split_val(docs, job.val_fraction, job.train.seed)
    tok = get_tokenizer(job.tokenizer, train, out)
    return pretrain(job.train, tok, train, val, out)


def read_pairs(spec: str, limit: int | None) -> list[tuple[str, str]]:
    """(prompt, completion) pairs from a JSONL file or a data set's prompt format."""
    p = Path(spec)
    if p.suffix == ".jsonl" or p.exists():
        from reasonlab.runs import read_jsonl

        pairs = []
        for i, rec in enumerate(read_jsonl(p), 1):
            if not isinstance(rec.get("prompt"), str) or not isinstance(rec.get("completion"), str):
                raise ValueError(f"{p} record {i}: needs string fields 'prompt' and 'completion'")
            pairs.append((rec["prompt"], rec["completion"]))
    else:
        from reasonlab.data.datasets import load_dataset
        from reasonlab.data.skillmath import format_prompt

        pairs = [(format_prompt(x.question), x.solution) for x in load_dataset(spec, split="train", limit=limit)]
    if not pairs:
        raise ValueError(f"no SFT pairs in {spec}")
    return pairs[:limit] if limit else pairs


def run_sft_job(job: SFTJob, out: str | Path) -> dict:
    from reasonlab.llama.sft import sft

    out = Path(out)
    pairs = read_pairs(job.data, job.limit or None)
    train, val = split_val(pairs, job.val_fraction, job.train.seed)
    spec = job.tokenizer
    if spec.path is None and job.train.init_from:
        spec = TokenizerSpec(path=job.train.init_from)
    tok = get_tokenizer(spec, [p + c for p, c in train], out)
    return sft(job.train, tok, train, out, val_pairs=val)


def print_results(results: dict) -> str:
    return json.dumps(results, indent=2, default=str)
