"""A pre-training corpus given as weighted sources (the Llama 3 data mix, arXiv:2407.21783 §3.1.2).

Llama 3's mix is stated as proportions of tokens (about 50% general knowledge, 25% math and
reasoning, 17% code, 8% multilingual). A :class:`MixSource` names one source (a corpus file or a
data set, as ``corpus`` takes) and its weight; :func:`sample_mix` draws documents source by source
with probability proportional to ``weight / mean document length``, so the expected share of
*tokens* from each source is its normalized weight. Sources smaller than their share are
repeated (upsampled) in a fresh shuffle each pass; the draw is deterministic given the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from reasonlab.config import ConfigError, check_range


@dataclass
class MixSource:
    """One source of a weighted mix: a corpus spec (file path, data set name or ``data:NAME``)
    and its weight (any positive number; the weights are normalized to proportions)."""

    source: str = ""
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not str(self.source).strip():
            raise ConfigError("config key 'mix[].source' is empty; give a corpus file or a data set name")
        check_range(f"mix[{self.source}].weight", self.weight, 0.0, None, lo_open=True)


def check_mix(sources: Sequence[MixSource], key: str = "mix") -> None:
    """Fail naming the source when a source appears twice or is neither a data set nor a file."""
    from reasonlab.llama.corpus import data_set_name

    seen: set[str] = set()
    for i, s in enumerate(sources):
        if s.source in seen:
            raise ConfigError(f"config key '{key}[{i}].source': {s.source!r} is listed twice")
        seen.add(s.source)
        try:
            name = data_set_name(s.source, f"{key}[{i}].source")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if name is not None:
            from reasonlab.data.datasets import known_datasets

            if name.lower() not in known_datasets():
                raise ConfigError(f"config key '{key}[{i}].source': unknown data set {name!r}; "
                                  f"known: {', '.join(known_datasets())}")
        elif not Path(s.source).is_file():
            raise ConfigError(f"config key '{key}[{i}].source': {s.source!r} is neither a known "
                              "data set nor an existing corpus file")


def proportions(sources: Sequence[MixSource]) -> dict[str, float]:
    """The normalized weights, source -> share of tokens."""
    total = sum(s.weight for s in sources)
    return {s.source: s.weight / total for s in sources}


def sample_mix(docs: Mapping[str, Sequence[str]], weights: Mapping[str, float], n_docs: int, *,
               seed: int, length: Callable[[str], int] = len) -> list[str]:
    """``n_docs`` documents drawn from ``docs`` (source -> documents) by ``weights`` (source ->
    positive weight): each draw picks a source with probability proportional to
    ``weight / mean length`` (token shares follow the weights), then that source's next document
    from a per-pass seeded shuffle (a small source repeats, a large one is subsampled)."""
    if set(docs) != set(weights):
        raise ValueError(f"mix: documents for {sorted(docs)} but weights for {sorted(weights)}")
    if not docs:
        raise ValueError("mix: no sources")
    for name, d in docs.items():
        if not d:
            raise ValueError(f"mix source {name!r} holds no documents")
        if not weights[name] > 0:
            raise ValueError(f"mix source {name!r}: weight {weights[name]!r} must be positive")
    if n_docs < 1:
        raise ValueError(f"mix: n_docs={n_docs} must be at least 1")
    names = sorted(docs)
    rate = [weights[n] / max(1e-9, sum(length(x) for x in docs[n]) / len(docs[n])) for n in names]
    rng = random.Random(seed)
    order: dict[str, list[int]] = {n: [] for n in names}
    passes = {n: 0 for n in names}
    out: list[str] = []
    for name in rng.choices(names, weights=rate, k=n_docs):
        if not order[name]:
            idx = list(range(len(docs[name])))
            random.Random(f"{seed}:{name}:{passes[name]}").shuffle(idx)
            order[name] = idx[::-1]
            passes[name] += 1
        out.append(docs[name][order[name].pop()])
    return out


def load_mix(sources: Sequence[MixSource], n_docs: int, *, seed: int,
             length: Callable[[str], int] = len, limit: int | None = None) -> list[str]:
    """Load every source with :func:`reasonlab.llama.corpus.load_corpus` and draw ``n_docs``
    documents from them by weight (:func:`sample_mix`)."""
    from reasonlab.llama.corpus import load_corpus

    check_mix(sources)
    docs = {s.source: load_corpus(s.source, limit=limit, seed=seed) for s in sources}
    return sample_mix(docs, {s.source: s.weight for s in sources}, n_docs, seed=seed, length=length)


def token_shares(texts: Sequence[str], source_of: Callable[[str], str],
                 length: Callable[[str], int] = len) -> dict[str, float]:
    """The realized share of tokens per source in ``texts`` (for checking a drawn mix)."""
    counts: dict[str, int] = {}
    for t in texts:
        counts[source_of(t)] = counts.get(source_of(t), 0) + length(t)
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in counts.items()}
