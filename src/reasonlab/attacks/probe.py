"""Probe sampling for GCG (Zhao et al. 2024, arXiv:2403.01251 §3, Algorithm 1).

Per step: a small draft model scores every candidate; the target scores a random probe set of
``B / sampling_factor`` candidates; the agreement ``alpha = (1 + rho) / 2`` with ``rho`` the
Spearman rank correlation of draft and target losses on the probe set sizes a filtered set — the
``max(1, int((1 - alpha) * B / r))`` candidates the draft likes best — that the target scores as
well; the winner is the target's best of probe ∪ filtered. A probe set of one, or constant losses,
leave ``rho`` undefined: then ``alpha = 0`` (trust the draft least, score the largest filtered set).
Probe sets of two give ``rho = ±1``, as the paper's formula does.

The draft may use its own tokenizer: candidates are decoded with the target's tokenizer and
encoded again with the draft's. Compared against nanoGCG (``nanogcg/gcg.py``,
``ProbeSamplingConfig``, ``_compute_candidates_loss_probe_sampling``) and the official
``llm_attacks/gcg/gcg_attack.py`` of zhaoyiran924/Probe-Sampling.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from reasonlab.attacks.gcg import PromptIds, target_losses
from reasonlab.lm.logprobs import PrefixState, batched_target_loss, prefix_state


def agreement(draft: Sequence[float] | torch.Tensor, target: Sequence[float] | torch.Tensor) -> float:
    """``(1 + rho) / 2`` with ``rho`` the Spearman correlation; 0 when ``rho`` is undefined."""
    from scipy.stats import spearmanr

    d = torch.as_tensor(draft, dtype=torch.float64).flatten()
    t = torch.as_tensor(target, dtype=torch.float64).flatten()
    if d.numel() != t.numel():
        raise ValueError("draft and target losses must have the same length")
    if d.numel() < 2:
        return 0.0
    with warnings.catch_warnings():  # constant input: rho is NaN, handled below
        warnings.simplefilter("ignore")
        rho = spearmanr(d.numpy(), t.numpy()).statistic
    if rho is None or not math.isfinite(float(rho)):
        return 0.0
    return (1.0 + float(rho)) / 2.0


def filtered_size(alpha: float, n: int, r: int) -> int:
    """``max(1, int((1 - alpha) * n / r))`` candidates go to the filtered set."""
    return max(1, int((1.0 - alpha) * n / r))


@dataclass
class ProbeSelection:
    winner: int  # index into the candidates
    winner_loss: float  # its target loss
    alpha: float
    probe: list[int]
    filtered: list[int]
    n_target: int  # candidates the target scored (probe ∪ filtered)


def probe_select(draft_losses: torch.Tensor, target_loss_fn: Callable[[torch.Tensor], torch.Tensor],
                 *, sampling_factor: int = 16, r: int = 8,
                 generator: torch.Generator | None = None) -> ProbeSelection:
    """Pick the winner among ``B`` candidates given the draft's losses ``[B]``.

    ``target_loss_fn(idx)`` returns the target's losses of the candidates ``idx`` (a LongTensor);
    it is called once for the probe set and once for the filtered candidates not already probed.
    """
    b = draft_losses.numel()
    n_probe = max(1, b // sampling_factor)
    probe = torch.randperm(b, generator=generator)[:n_probe]
    probe_t = target_loss_fn(probe).cpu().double()
    alpha = agreement(draft_losses[probe], probe_t)
    k = min(b, filtered_size(alpha, b, r))
    filtered = torch.argsort(draft_losses.double(), stable=True)[:k]
    known = {int(i): float(v) for i, v in zip(probe, probe_t)}
    new = torch.tensor([int(i) for i in filtered if int(i) not in known], dtype=torch.long)
    if new.numel():
        for i, v in zip(new, target_loss_fn(new).cpu().double()):
            known[int(i)] = float(v)
    winner = min(known, key=lambda i: (known[i], i))
    return ProbeSelection(winner, known[winner], alpha, probe.tolist(), filtered.tolist(),
                          len(known))


def same_tokenizer(a, b) -> bool:
    """True when the two tokenizers map the same strings to the same ids."""
    return a is b or a.get_vocab() == b.get_vocab()


def draft_losses(draft, draft_prompts: Sequence[PromptIds], tokenizer, cands: torch.Tensor, *,
                 batch_size: int = 512, use_prefix_cache: bool = True,
                 prefixes: Sequence[PrefixState | None] | None = None,
                 same_tok: bool | None = None) -> torch.Tensor:
    """The draft's mean target loss over ``draft_prompts`` for each candidate ``[B]``.

    ``draft = (model, draft_tokenizer)``. With a different tokenizer the candidates are decoded
    with ``tokenizer`` (the target's, one batched decode) and encoded with the draft's (one batched
    encode); rows of unequal length are right-padded and masked. ``prefixes`` (one per prompt,
    :func:`reasonlab.lm.logprobs.prefix_state` of the draft prompt's ``before``) are reused
    instead of running the part before the suffix again; ``same_tok`` skips the tokenizer
    comparison when the caller already made it.
    """
    model, d_tok = draft
    if prefixes is None:
        prefixes = [None] * len(draft_prompts)
    if same_tok is None:
        same_tok = same_tokenizer(d_tok, tokenizer)
    if same_tok:
        total = torch.zeros(cands.shape[0])
        for p, pre in zip(draft_prompts, prefixes):
            total += target_losses(model, p, cands, batch_size=batch_size,
                                   use_prefix_cache=use_prefix_cache, prefix=pre)
        return total / len(draft_prompts)
    texts = tokenizer.batch_decode(cands.tolist())
    fallback = [d_tok.eos_token_id or 0]
    enc = [list(e) or fallback for e in d_tok(texts, add_special_tokens=False)["input_ids"]]
    pad = d_tok.pad_token_id if d_tok.pad_token_id is not None else (d_tok.eos_token_id or 0)
    total = torch.zeros(cands.shape[0])
    for p, pre in zip(draft_prompts, prefixes):
        tail = p.after.tolist() + p.target.tolist()
        width = max(len(e) for e in enc) + len(tail)
        ids = torch.full((len(enc), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        mask = torch.zeros(ids.shape, dtype=torch.bool)
        for j, e in enumerate(enc):
            n = len(e) + len(tail)
            ids[j, :n] = torch.tensor(e + tail)
            attn[j, :n] = 1
            t0 = len(e) + p.after.numel()
            mask[j, t0:n] = True
        if use_prefix_cache:
            if pre is None:
                pre = prefix_state(model, p.before)
            total += batched_target_loss(model, ids, mask, attention_mask=attn, prefix=pre,
                                         batch_size=batch_size).cpu()
        else:
            full = torch.cat([p.before.view(1, -1).expand(ids.shape[0], -1), ids], dim=1)
            ones = torch.ones(ids.shape[0], p.before.numel(), dtype=attn.dtype)
            pad_mask = torch.zeros(ids.shape[0], p.before.numel(), dtype=torch.bool)
            total += batched_target_loss(model, full, torch.cat([pad_mask, mask], dim=1),
                                         attention_mask=torch.cat([ones, attn], dim=1),
                                         batch_size=batch_size).cpu()
    return total / len(draft_prompts)

