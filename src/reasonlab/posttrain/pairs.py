"""DPO preference pairs from scored samples (Llama 3, arXiv:2407.21783 §4.2.2) and step pairs.

Prompts with a correct and an incorrect sample give a pair: chosen = the best correct sample
(the most likely one under the model among the correct), rejected = the incorrect sample the
model found most likely (its most confident mistake). Step pairs (``pair_unit: step``; Step-DPO,
arXiv:2406.18629, and the step-level preferences of MCTS-DPO, arXiv:2405.00451) cut a pair at
the first line where chosen and rejected differ: the shared lines join the prompt and each side
keeps only that line, so DPO does not push down the right steps and the answer copy that follow
a wrong step. Pure functions, plus :func:`read_pairs` (a checked ``pairs.jsonl`` reader).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from reasonlab.config import check_choice
from reasonlab.posttrain.config import PAIR_UNITS
from reasonlab.training.dpo import DPOConfig


def mean_logprob(sample: dict[str, Any]) -> float:
    """A sample's log-probability per token (its length-normalized likelihood)."""
    return sample["logprob"] / max(1, sample["n_tokens"])


def build_pairs(records: Sequence[dict[str, Any]], *, max_pairs_per_prompt: int = 1,
                threshold: float = 0.5) -> list[dict[str, Any]]:
    """DPO pairs from scored samples: chosen = a sample with reward > ``threshold``, rejected =
    one with reward ≤ ``threshold`` (distinct texts). The i-th pair of a prompt pairs the i-th
    best chosen (reward, then mean log-prob) with the i-th most likely rejected (the model's most
    confident mistakes first). Prompts whose samples are all right or all wrong give no pair."""
    pairs = []
    for r in records:
        good: dict[str, dict] = {}
        bad: dict[str, dict] = {}
        for s in r["samples"]:
            if not s["text"].strip():
                continue
            pool = good if s["reward"] > threshold else bad
            if s["text"] not in pool or mean_logprob(s) > mean_logprob(pool[s["text"]]):
                pool[s["text"]] = s
        bad = {t: s for t, s in bad.items() if t not in good}
        chosen = sorted(good.values(), key=lambda s: (-s["reward"], -mean_logprob(s)))
        rejected = sorted(bad.values(), key=lambda s: -mean_logprob(s))
        for c, rj in list(zip(chosen, rejected))[:max_pairs_per_prompt]:
            pairs.append({"id": r["id"], "prompt": r["prompt"], "chosen": c["text"],
                          "rejected": rj["text"], "chosen_reward": c["reward"],
                          "rejected_reward": rj["reward"]})
    return pairs


def step_pair(pair: dict[str, Any]) -> dict[str, Any] | None:
    """The pair cut at the first line where ``chosen`` and ``rejected`` differ: the lines before it
    join the prompt, and each side becomes that one line (with its newline when more follows).
    None when the sides do not differ or the rejected one ends before it."""
    c_lines, r_lines = pair["chosen"].split("\n"), pair["rejected"].split("\n")
    i = next((j for j, (a, b) in enumerate(zip(c_lines, r_lines)) if a != b), None)
    if i is None:
        i = min(len(c_lines), len(r_lines))
    if i >= len(c_lines) or i >= len(r_lines) or not r_lines[i].strip():
        return None

    def line(lines: list[str]) -> str:
        return lines[i] + ("\n" if i < len(lines) - 1 else "")

    shared = "".join(x + "\n" for x in c_lines[:i])
    return {**pair, "prompt": pair["prompt"] + shared, "chosen": line(c_lines),
            "rejected": line(r_lines), "step": i}


def dpo_inputs(pairs: Sequence[dict[str, Any]], unit: str,
               cfg: DPOConfig) -> tuple[list[dict[str, Any]], DPOConfig]:
    """The pairs and config DPO trains with: whole solutions, or (``unit='step'``) the
    :func:`step_pair` cuts, which get no EOS (a step is not the end of the answer)."""
    check_choice("pair_unit", unit, PAIR_UNITS)
    if unit == "solution":
        return list(pairs), cfg
    return ([q for q in map(step_pair, pairs) if q is not None],
            dataclasses.replace(cfg, append_eos=False))


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """The records of a pairs.jsonl; one without string prompt/chosen/rejected raises naming it."""
    from reasonlab.runs import read_jsonl

    pairs = list(read_jsonl(path))
    for i, p in enumerate(pairs, 1):
        for k in ("prompt", "chosen", "rejected"):
            if not isinstance(p.get(k), str):
                raise ValueError(f"{path} record {i}: needs string field '{k}'")
    return pairs
