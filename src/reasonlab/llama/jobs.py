"""Runner configs and entry points for the Llama 3 CLI commands (pretrain, sft)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from reasonlab.config import ConfigError, check_choice, check_range
from reasonlab.llama.mix import MixSource, check_mix
from reasonlab.llama.pretrain import PretrainConfig
from reasonlab.llama.sft import SFTConfig
from reasonlab.llama.tokenizer import DIGIT_MODES

log = logging.getLogger(__name__)


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
    # A weighted mix of sources (replaces ``corpus`` when given): shares of characters, drawn by
    # weight with the seed; ``mix_docs`` documents are drawn (0 = as many as the sources hold).
    mix: list[MixSource] = field(default_factory=list)
    mix_docs: int = 0
    # The annealing stages' data (a stage with data: anneal): an upsampled high-quality mix.
    anneal_mix: list[MixSource] = field(default_factory=list)
    anneal_docs: int = 0
    # The long-context stages' data (a stage with data: long): a mix upsampling long documents.
    long_mix: list[MixSource] = field(default_factory=list)
    long_docs: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("mix_docs", self.mix_docs, 0)
        check_range("anneal_docs", self.anneal_docs, 0)
        check_range("long_docs", self.long_docs, 0)
        if self.mix:
            check_mix(self.mix, "mix")
        for name, mix in (("anneal", self.anneal_mix), ("long", self.long_mix)):
            if mix:
                check_mix(mix, f"{name}_mix")
            if any(s.data == name for s in self.train.stages) and not mix:
                raise ConfigError(f"config key 'train.stages' has a stage with data: {name} but "
                                  f"config key '{name}_mix' is empty")


@dataclass
class SFTJob(_Job):
    data: str = "skillmath"  # JSONL of {"prompt","completion"} or a data set name
    train: SFTConfig = field(default_factory=SFTConfig)


def split_val(items: list, fraction: float, seed: int) -> tuple[list, list]:
    items = list(items)
    random.Random(seed).shuffle(items)
    n_val = max(1, int(len(items) * fraction))
    return items[n_val:], items[:n_val]


def tokenizer_identity(spec: TokenizerSpec) -> dict:
    """What a run records of its tokenizer: the files' hashes when it reuses a directory (the spec
    itself, in the job config, identifies one trained on the run's data)."""
    from reasonlab.runs import file_identity

    if not spec.path:
        return {"trained_on": "the run's training data"}
    d = Path(spec.path)
    if not (d / "tokenizer.json").is_file():
        raise FileNotFoundError(f"tokenizer.path: no tokenizer.json in {d}")
    return {"path": str(d), "tokenizer.json": file_identity(d / "tokenizer.json")["sha256"]}


def open_job_run(job, out: str | Path, *, data_identity: dict, name: str, overwrite: bool = False):
    """The run directory of a job: its record holds every section of ``job`` and the identities
    of the data and the tokenizer, all compared when the run is resumed."""
    from reasonlab.runs import Run

    identity = {"data": data_identity, "tokenizer": tokenizer_identity(job.tokenizer)}
    return Run(out, job, job.train.seed, name=name, identity=identity, overwrite=overwrite)


def get_tokenizer(spec: TokenizerSpec, texts: list[str], out_dir: Path):
    from reasonlab.llama.tokenizer import load_or_train_tokenizer, load_tokenizer

    if spec.path:
        return load_tokenizer(spec.path)
    # Deterministic, so every torchrun rank trains the same one; rank 0 saves it atomically.
    return load_or_train_tokenizer(out_dir / "tokenizer", texts, vocab_size=spec.vocab_size,
                                   digits=spec.digits, save=int(os.environ.get("RANK", "0")) == 0)


def _finished(run) -> dict | None:
    done = run.finished("model/config.json")
    if done is not None:
        log.info("run %s has already finished; nothing to do (use --overwrite to train again)",
                 run.dir)
        return done
    return None


def run_pretrain_job(job: PretrainJob, out: str | Path, *, overwrite: bool = False) -> dict:
    """Load the corpus, open the run (refusing another job's directory), train or reuse the
    tokenizer, pre-train. A finished run is left as it is and its results returned."""
    from reasonlab.llama.pretrain import pretrain
    from reasonlab.runs import texts_identity

    out = Path(out)
    docs = _mix_or_corpus(job.mix, job.mix_docs, job.corpus, job.limit, job.train.seed)
    anneal = (_mix_or_corpus(job.anneal_mix, job.anneal_docs, "", job.limit, job.train.seed + 1)
              if job.anneal_mix else None)
    long = (_mix_or_corpus(job.long_mix, job.long_docs, "", job.limit, job.train.seed + 2)
            if job.long_mix else None)
    identity = texts_identity(docs) if anneal is None and long is None else {
        "main": texts_identity(docs), **({"anneal": texts_identity(anneal)} if anneal else {}),
        **({"long": texts_identity(long)} if long else {})}
    run = open_job_run(job, out, data_identity=identity, name="pretrain", overwrite=overwrite)
    if (done := _finished(run)) is not None:
        return done
    train, val = split_val(docs, job.val_fraction, job.train.seed)
    tok = get_tokenizer(job.tokenizer, train + (anneal or []) + (long or []), out)
    return pretrain(job.train, tok, train, val, out, run=run, anneal_texts=anneal, long_texts=long)


def _mix_or_corpus(mix: list[MixSource], n_docs: int, corpus: str, limit: int, seed: int) -> list[str]:
    """The documents of a weighted mix (``n_docs`` drawn; 0 = the sources' total) or of one corpus."""
    from reasonlab.llama.corpus import load_corpus
    from reasonlab.llama.mix import load_mix

    if not mix:
        return load_corpus(corpus, limit=limit or None, seed=seed)
    n = n_docs or sum(len(load_corpus(s.source, limit=limit or None, seed=seed)) for s in mix)
    return load_mix(mix, n, seed=seed, limit=limit or None)


def read_pairs(spec: str, limit: int | None) -> list[tuple[str, str]]:
    """(prompt, completion) pairs from a JSONL file or a data set's prompt format."""
    from reasonlab.llama.corpus import data_set_name

    p = Path(spec)
    name = data_set_name(spec, "data")
    if name is None:
        from reasonlab.runs import read_jsonl

        pairs = []
        for i, rec in enumerate(read_jsonl(p), 1):
            if not isinstance(rec.get("prompt"), str) or not isinstance(rec.get("completion"), str):
                raise ValueError(f"{p} record {i}: needs string fields 'prompt' and 'completion'")
            pairs.append((rec["prompt"], rec["completion"]))
    else:
        from reasonlab.data.datasets import load_dataset
        from reasonlab.data.skillmath import format_prompt

        pairs = [(format_prompt(x.question), x.solution) for x in load_dataset(name, split="train", limit=limit)]
    if not pairs:
        raise ValueError(f"no SFT pairs in {spec}")
    return pairs[:limit] if limit else pairs


def run_sft_job(job: SFTJob, out: str | Path, *, overwrite: bool = False) -> dict:
    """SFT with the same run semantics as :func:`run_pretrain_job`."""
    from reasonlab.llama.sft import sft
    from reasonlab.runs import texts_identity

    out = Path(out)
    pairs = read_pairs(job.data, job.limit or None)
    spec = job.tokenizer
    if spec.path is None and job.train.init_from:
        spec = TokenizerSpec(path=job.train.init_from)
    run = open_job_run(dataclasses.replace(job, tokenizer=spec), out,
                       data_identity=texts_identity(pairs), name="sft", overwrite=overwrite)
    if (done := _finished(run)) is not None:
        return done
    train, val = split_val(pairs, job.val_fraction, job.train.seed)
    tok = get_tokenizer(spec, [p + c for p, c in train], out)
    return sft(job.train, tok, train, out, val_pairs=val, run=run)


def print_results(results: dict) -> str:
    return json.dumps(results, indent=2, default=str)
