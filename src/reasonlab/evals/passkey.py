"""Passkey retrieval (needle in a haystack): can a model read a key back from anywhere in its context?

The test of long-context extension used by Llama 3 (arXiv:2407.21783 §3.4.2, after Mohtashami &
Jaggi 2023, arXiv:2305.16300): a numeric key is planted at a chosen depth of repetitive filler
text, and the model, asked for the key at the end, must generate it. Accuracy is reported by
context length (tokens of prompt + answer) × depth (0 = the key at the start, 1 = at the end), as a
table and a heatmap. :func:`passkey_document` gives the same text with the answer, for training
corpora. Works with any :class:`reasonlab.lm.LanguageModel` (greedy generation).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from reasonlab.config import ConfigError, check_range

log = logging.getLogger(__name__)

FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
          "There and back again. ")
# Short lines, so a context of 64 tokens still holds filler at one character per token.
KEY_LINE = "The key is {key}. "
QUESTION = "Key? The key is "


def _filler(n_chars: int, rng: random.Random) -> str:
    """``n_chars`` characters of the filler, starting at a random point of it."""
    start = rng.randrange(len(FILLER))
    reps = (start + n_chars) // len(FILLER) + 1
    return (FILLER * reps)[start:start + n_chars]


def make_key(rng: random.Random, digits: int) -> str:
    """A random key of ``digits`` digits (no leading zero)."""
    return str(rng.randrange(10 ** (digits - 1), 10 ** digits))


def passkey_prompt(length: int, depth: float, key: str, count_tokens: Callable[[str], int],
                   rng: random.Random) -> str:
    """A prompt whose tokens plus the key's come to at most ``length``: filler, the key line at
    ``depth`` of the filler (0 start .. 1 end), more filler, the question."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"passkey depth {depth!r} must be in [0, 1]")
    fixed = count_tokens(KEY_LINE.format(key=key) + QUESTION + key)
    if fixed >= length:
        raise ValueError(f"passkey context length {length} leaves no room for filler "
                         f"(the key line, question and answer take {fixed} tokens)")
    filler = _filler(4 * length, rng)
    lo, hi = 0, len(filler)  # the longest filler that fits (token counts grow with characters)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        before = filler[:round(depth * mid)]
        text = before + KEY_LINE.format(key=key) + filler[round(depth * mid):mid] + QUESTION + key
        if count_tokens(text) <= length:
            lo = mid
        else:
            hi = mid - 1
    cut = round(depth * lo)
    return filler[:cut] + KEY_LINE.format(key=key) + filler[cut:lo] + QUESTION


def passkey_document(length: int, depth: float, key: str, count_tokens: Callable[[str], int],
                     rng: random.Random) -> str:
    """A training document: the prompt followed by the key and a full stop."""
    return passkey_prompt(length, depth, key, count_tokens, rng) + key + "."


def passkey_corpus(n: int, lengths: Sequence[int], count_tokens: Callable[[str], int], *, seed: int,
                   digits: int = 4) -> list[str]:
    """``n`` training documents with lengths drawn from ``lengths`` and uniform depths."""
    rng = random.Random(seed)
    return [passkey_document(rng.choice(list(lengths)), rng.random(), make_key(rng, digits),
                             count_tokens, rng) for _ in range(n)]


def token_counter(lm: Any) -> Callable[[str], int]:
    """Tokens of a text for ``lm`` as a prompt (with BOS when it adds one); about 4 characters a
    token for a model without a local tokenizer."""
    encode = getattr(lm, "encode", None)
    if encode is None:
        return lambda text: len(text) // 4 + 1
    return lambda text: len(encode(text))


@dataclass
class PasskeyConfig:
    """The grid of a passkey evaluation."""

    model: str = ""  # a model folder, a model cache recipe name or an http(s) URL
    lengths: list[int] = field(default_factory=lambda: [64, 128, 256])  # tokens, prompt + key
    depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    n_per_cell: int = 20
    digits: int = 4
    batch_size: int = 16
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.lengths:
            raise ConfigError("config key 'lengths' is empty; give context lengths in tokens")
        if not self.depths:
            raise ConfigError("config key 'depths' is empty; give depths in [0, 1]")
        for i, n in enumerate(self.lengths):
            check_range(f"lengths[{i}]", n, 16)
        for i, d in enumerate(self.depths):
            check_range(f"depths[{i}]", d, 0.0, 1.0)
        check_range("n_per_cell", self.n_per_cell, 1)
        check_range("digits", self.digits, 1, 12)
        check_range("batch_size", self.batch_size, 1)


def evaluate_passkey(lm: Any, lengths: Sequence[int], depths: Sequence[float], *, n_per_cell: int,
                     digits: int = 4, seed: int = 0) -> dict[str, Any]:
    """Greedy passkey accuracy per (length, depth) cell; keys and filler offsets from ``seed``
    (the same cases for every model). Returns ``cells`` (length, depth, accuracy, digit
    accuracy, n), ``by_length`` and the overall ``accuracy``; chance is ``10**-digits``."""
    count = token_counter(lm)
    cases: list[tuple[int, float, str, str]] = []
    for length in lengths:
        for depth in depths:
            rng = random.Random(f"{seed}:{length}:{depth}")
            for _ in range(n_per_cell):
                key = make_key(rng, digits)
                cases.append((length, depth, key, passkey_prompt(length, depth, key, count, rng)))
    gens = lm.generate([c[3] for c in cases], max_new_tokens=digits + 1, temperature=0.0)
    cells: dict[tuple[int, float], list[tuple[bool, float]]] = {}
    for (length, depth, key, _), g in zip(cases, gens):
        got = "".join(ch for ch in g.text if ch.isdigit())[:digits]
        digit_acc = sum(a == b for a, b in zip(got, key)) / digits
        cells.setdefault((length, depth), []).append((got == key, digit_acc))
    out_cells = [{"length": L, "depth": d, "accuracy": sum(x for x, _ in v) / len(v),
                  "digit_accuracy": sum(y for _, y in v) / len(v), "n": len(v)}
                 for (L, d), v in cells.items()]
    by_length = {str(L): sum(c["accuracy"] for c in out_cells if c["length"] == L) /
                 sum(1 for c in out_cells if c["length"] == L) for L in lengths}
    return {"cells": out_cells, "by_length": by_length,
            "accuracy": sum(c["accuracy"] for c in out_cells) / len(out_cells),
            "lengths": list(lengths), "depths": list(depths), "n_per_cell": n_per_cell,
            "digits": digits, "chance": 10.0 ** -digits}


def format_table(res: dict[str, Any]) -> str:
    """Accuracy table: one row per context length, one column per depth, and the row mean."""
    depths = res["depths"]
    acc = {(c["length"], c["depth"]): c["accuracy"] for c in res["cells"]}
    lines = ["length \\ depth" + "".join(f"{d:>8.2f}" for d in depths) + "    mean"]
    for L in res["lengths"]:
        lines.append(f"{L:>14d}" + "".join(f"{acc[(L, d)]:>8.2f}" for d in depths)
                     + f"{res['by_length'][str(L)]:>8.2f}")
    return "\n".join(lines)


def plot_passkey(res: dict[str, Any], path: str | Path, title: str = "passkey accuracy") -> Path:
    """Heatmap of accuracy, context length (rows) × depth (columns)."""
    from reasonlab.plots import plot_heatmap

    acc = {(c["length"], c["depth"]): c["accuracy"] for c in res["cells"]}
    grid = [[acc[(L, d)] for d in res["depths"]] for L in res["lengths"]]
    return plot_heatmap(grid, [str(L) for L in res["lengths"]], [f"{d:.2f}" for d in res["depths"]],
                        path, title=title, xlabel="depth of the key", ylabel="context length (tokens)")


def run_passkey(cfg: PasskeyConfig, out_dir: str | Path) -> dict[str, Any]:
    """Evaluate ``cfg.model`` on the grid; writes ``results.json``, ``table.txt`` and ``passkey.png``."""
    from reasonlab.lm.load import load_lm
    from reasonlab.runs import Run, atomic_write_text

    if not cfg.model:
        raise ConfigError("config key 'model' is empty; name a model folder, recipe or URL")
    run = Run(out_dir, cfg, cfg.seed, name="passkey")
    done = run.finished("passkey.png")
    if done is not None:
        return done
    lm = load_lm(cfg.model, device=cfg.device, batch_size=cfg.batch_size)
    ctx = getattr(lm, "context_length", lambda: None)()
    if ctx is not None and max(cfg.lengths) > ctx:
        raise ConfigError(f"config key 'lengths': {max(cfg.lengths)} tokens is longer than the "
                          f"model's context of {ctx}")
    res = evaluate_passkey(lm, cfg.lengths, cfg.depths, n_per_cell=cfg.n_per_cell, digits=cfg.digits,
                           seed=cfg.seed)
    atomic_write_text(run.path("table.txt"), format_table(res) + "\n")
    plot_passkey(res, run.path("passkey.png"))
    run.save_results(res)
    return res
