"""The DPO family, written once for the whole project: sigmoid DPO, conservative DPO with a
per-pair ε, IPO, an optional NLL term on the chosen answer, and token masks.

Used by Llama 3 post-training (β=0.1, formatting tokens masked, NLL weight 0.2 — arXiv:2407.21783
§4.1.4) and by MCTS-DPO (per-pair ε from visit counts, step tokens only).

Three layers:

* pure losses on per-sequence log-probabilities — :func:`dpo_loss`, :func:`nll_loss`,
  :func:`preference_loss`; they match TRL's ``DPOTrainer`` on the same inputs (``sigmoid``,
  ``ipo`` and ``["sigmoid", "sft"]``; the cDPO form matches TRL's ``aot`` formula, see tests);
* masked log-probabilities of (prompt, chosen, rejected) token ids under any HF causal LM —
  :func:`encode_pair`, :func:`collate_pairs`, :func:`pair_logps`. Only completion tokens count;
  token ids in ``exclude_token_ids`` (e.g. Llama 3 headers and ``<|eot_id|>``) are dropped from
  the log-ratios;
* a small training loop :func:`train_dpo` (AdamW, linear warmup, gradient clipping) that logs
  loss, rewards, margins and accuracy to a :class:`reasonlab.runs.Run`.

Conventions (TRL's): the reward of a completion is ``β·(log π(y|x) − log π_ref(y|x))`` summed over
its counted tokens; ``Δ = (π_c − ref_c) − (π_r − ref_r)``.

* sigmoid / cDPO: ``−(1−ε)·logσ(βΔ) − ε·logσ(−βΔ)`` (ε = 0 is plain DPO); ε may be a tensor, one
  value per pair.
* IPO: ``(Δ̄ − 1/(2β))²`` where Δ̄ uses the per-token *average* log-ratios (TRL divides each
  completion's summed log-ratio by its number of counted tokens; the IPO authors confirmed that
  their reported results use this normalisation).
* NLL: ``−Σ log π(chosen tokens) / #chosen tokens`` over the whole batch — TRL's ``"sft"`` term,
  a token-level mean, added with weight ``nll_weight``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from reasonlab.config import ConfigError, check_choice, check_range
from reasonlab.lm.chat_format import formatting_token_ids
from reasonlab.lm.logprobs import forward_logits, masked_logprob_sum

log = logging.getLogger(__name__)

LOSS_TYPES = ("sigmoid", "ipo")


# --------------------------------------------------------------------------------------------
# Pure losses
# --------------------------------------------------------------------------------------------

def _as_epsilon(label_smoothing: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    eps = torch.as_tensor(label_smoothing, dtype=like.dtype, device=like.device)
    if eps.dim() > 1 or (eps.dim() == 1 and eps.shape[0] != like.shape[0]):
        raise ValueError(f"label_smoothing must be a float or a tensor of shape ({like.shape[0]},), "
                         f"got shape {tuple(eps.shape)}")
    if bool(((eps < 0) | (eps > 0.5)).any()):
        raise ValueError("label_smoothing (cDPO ε) must lie in [0, 0.5]; "
                         f"got min {float(eps.min()):.4g}, max {float(eps.max()):.4g}")
    return eps


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float = 0.1, loss_type: str = "sigmoid",
             label_smoothing: float | torch.Tensor = 0.0, *,
             chosen_lengths: torch.Tensor | None = None,
             rejected_lengths: torch.Tensor | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO-family losses from per-sequence (summed) log-probabilities.

    Args:
        policy_chosen_logps, policy_rejected_logps: shape (B,), log π(y|x) summed over the counted
            tokens of each completion.
        ref_chosen_logps, ref_rejected_logps: shape (B,), the same under the reference model.
        beta: the KL strength β (> 0).
        loss_type: ``"sigmoid"`` (DPO / cDPO) or ``"ipo"``.
        label_smoothing: cDPO ε in [0, 0.5], a float or a tensor of shape (B,) (one per pair).
            Only for ``sigmoid``.
        chosen_lengths, rejected_lengths: number of counted tokens per completion; IPO divides each
            log-ratio by it (as TRL does). If omitted for IPO the log-probs are taken as already
            per-token averages.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each of shape (B,); the rewards are
        ``β·(policy − reference)`` of the summed log-probs, detached.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    if loss_type == "sigmoid":
        eps = _as_epsilon(label_smoothing, chosen_logratios)
        z = beta * (chosen_logratios - rejected_logratios)
        losses = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
    elif loss_type == "ipo":
        eps = torch.as_tensor(label_smoothing)
        if bool((eps != 0).any()):
            raise ValueError("label_smoothing (cDPO ε) applies to loss_type='sigmoid' only, not 'ipo'")
        c, r = chosen_logratios, rejected_logratios
        if chosen_lengths is not None:
            c = c / chosen_lengths.to(c.dtype).clamp(min=1.0)
        if rejected_lengths is not None:
            r = r / rejected_lengths.to(r.dtype).clamp(min=1.0)
        losses = (c - r - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"loss_type='{loss_type}' is not one of {list(LOSS_TYPES)}")
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return losses, chosen_rewards, rejected_rewards


def nll_loss(chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor) -> torch.Tensor:
    """Token-level NLL of the chosen completions: ``−Σ_batch logp / Σ_batch tokens`` (TRL "sft")."""
    return -chosen_logps.sum() / chosen_lengths.to(chosen_logps.dtype).sum().clamp(min=1.0)


@dataclass
class DPOOutput:
    """The scalar loss to back-propagate and its parts (per-pair tensors, detached rewards)."""

    loss: torch.Tensor
    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    nll: torch.Tensor | None = None

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracy(self) -> torch.Tensor:
        return (self.chosen_rewards > self.rejected_rewards).float().mean()


def preference_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                    ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *,
                    chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor,
                    beta: float = 0.1, loss_type: str = "sigmoid",
                    label_smoothing: float | torch.Tensor = 0.0,
                    nll_weight: float = 0.0) -> DPOOutput:
    """``mean(dpo_loss) + nll_weight · nll_loss`` — TRL's ``loss_type=[type, "sft"]`` with
    ``loss_weights=[1, nll_weight]``."""
    losses, cr, rr = dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                              ref_rejected_logps, beta=beta, loss_type=loss_type,
                              label_smoothing=label_smoothing, chosen_lengths=chosen_lengths,
                              rejected_lengths=rejected_lengths)
    loss = losses.mean()
    nll = None
    if nll_weight > 0:
        nll = nll_loss(policy_chosen_logps, chosen_lengths)
        loss = loss + nll_weight * nll
    return DPOOutput(loss=loss, losses=losses, chosen_rewards=cr, rejected_rewards=rr,
                     nll=None if nll is None else nll.detach())


# --------------------------------------------------------------------------------------------
# Masked log-probabilities of (prompt, chosen, rejected) under a causal LM
# --------------------------------------------------------------------------------------------

@dataclass
class PreferencePair:
    """One preference pair. Fields are token ids (lists of int) or texts (encoded with the
    tokenizer); ``epsilon`` is this pair's cDPO ε (``None``: the config's ``label_smoothing``)."""

    prompt: str | list[int]
    chosen: str | list[int]
    rejected: str | list[int]
    epsilon: float | None = None


class EncodedPair(NamedTuple):
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


class Truncation(NamedTuple):
    """What :func:`truncate_pair` cut from one pair (token counts)."""

    prompt_cut: int
    chosen_cut: int
    rejected_cut: int

    @property
    def any(self) -> bool:
        return bool(self.prompt_cut or self.chosen_cut or self.rejected_cut)


def truncate_pair(pair: EncodedPair, max_len: int, bos_token_id: int | None = None
                  ) -> tuple[EncodedPair, Truncation]:
    """Fit both rows of a pair into ``max_len`` with one prompt shared by both sides.

    As TRL's ``DPOTrainer`` does, the prompt is truncated once, sized by the *longer* completion,
    so chosen and rejected always see the same prompt: its oldest tokens go first (down to half
    the budget; the end holds the question nearest to the answer), a leading BOS is kept, then
    each completion's end is cut to what is left.
    """
    prompt, chosen, rejected = list(pair.prompt), list(pair.chosen), list(pair.rejected)
    longest = max(len(chosen), len(rejected))
    if len(prompt) + longest <= max_len:
        return EncodedPair(prompt, chosen, rejected), Truncation(0, 0, 0)
    head = prompt[:1] if bos_token_id is not None and prompt[:1] == [bos_token_id] else []
    body = prompt[len(head):]
    keep = max(max_len - longest, min(len(prompt), max_len // 2))
    keep_body = max(0, min(len(body), keep - len(head)))
    new_prompt = head + (body[len(body) - keep_body:] if keep_body else [])
    room = max(0, max_len - len(new_prompt))
    out = EncodedPair(new_prompt, chosen[:room], rejected[:room])
    return out, Truncation(len(prompt) - len(new_prompt), len(chosen) - len(out.chosen),
                           len(rejected) - len(out.rejected))


def truncate_pairs(pairs: Sequence[EncodedPair], max_len: int, bos_token_id: int | None = None,
                   *, warn: bool = True) -> list[EncodedPair]:
    """:func:`truncate_pair` on every pair; logs one warning with counts when anything is cut."""
    out, cuts = [], []
    for p in pairs:
        q, t = truncate_pair(p, max_len, bos_token_id)
        out.append(q)
        cuts.append(t)
    hit = [t for t in cuts if t.any]
    if hit and warn:
        log.warning("DPO max_len=%d: %d of %d pairs truncated (prompt tokens cut: %d in %d pairs; "
                    "chosen tokens cut: %d; rejected tokens cut: %d)", max_len, len(hit), len(cuts),
                    sum(t.prompt_cut for t in hit), sum(1 for t in hit if t.prompt_cut),
                    sum(t.chosen_cut for t in hit), sum(t.rejected_cut for t in hit))
    return out


def encode_pair(pair: PreferencePair, tokenizer: Any = None, *, append_eos: bool = True
                ) -> EncodedPair:
    """Token ids of a pair. Texts: the prompt gets the tokenizer's special tokens (BOS) unless it
    already starts with BOS text; completions get none and, with ``append_eos``, end with EOS."""
    def enc(x: str | list[int], is_prompt: bool) -> list[int]:
        if not isinstance(x, str):
            return [int(t) for t in x]
        if tokenizer is None:
            raise ValueError("text pairs need a tokenizer")
        if is_prompt:
            bos = getattr(tokenizer, "bos_token", None)
            add = not (bos and x.startswith(bos))
            return list(tokenizer(x, add_special_tokens=add)["input_ids"])
        ids = list(tokenizer(x, add_special_tokens=False)["input_ids"])
        eos = getattr(tokenizer, "eos_token_id", None)
        if append_eos and eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        return ids

    out = EncodedPair(enc(pair.prompt, True), enc(pair.chosen, False), enc(pair.rejected, False))
    if not out.chosen or not out.rejected:
        raise ValueError("a preference pair has an empty chosen or rejected completion")
    return out


def collate_pairs(pairs: Sequence[EncodedPair], *, pad_token_id: int, max_len: int | None = None,
                  exclude_token_ids: Iterable[int] = (), bos_token_id: int | None = None
                  ) -> dict[str, torch.Tensor]:
    """Right-padded batch of 2B rows: the B chosen sequences, then the B rejected ones.

    With ``max_len`` each pair is first cut by :func:`truncate_pair` (one prompt for both sides,
    BOS kept).

    Returns ``input_ids``, ``attention_mask``, ``completion_mask`` (1 on completion tokens) and
    ``loss_mask`` (completion tokens whose id is not in ``exclude_token_ids``), all (2B, T) long.
    """
    excl = torch.tensor(sorted(set(int(t) for t in exclude_token_ids)), dtype=torch.long)
    if max_len:
        pairs = truncate_pairs(pairs, max_len, bos_token_id)
    rows = [(list(p.prompt), list(p.chosen)) for p in pairs]
    rows += [(list(p.prompt), list(p.rejected)) for p in pairs]
    T = max(len(a) + len(b) for a, b in rows)
    n = len(rows)
    input_ids = torch.full((n, T), pad_token_id, dtype=torch.long)
    attention = torch.zeros((n, T), dtype=torch.long)
    completion = torch.zeros((n, T), dtype=torch.long)
    for i, (pr, co) in enumerate(rows):
        seq = list(pr) + list(co)
        input_ids[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[i, :len(seq)] = 1
        completion[i, len(pr):len(seq)] = 1
    loss_mask = completion.clone()
    if excl.numel():
        loss_mask[torch.isin(input_ids, excl)] = 0
    return {"input_ids": input_ids, "attention_mask": attention,
            "completion_mask": completion, "loss_mask": loss_mask}


# Summed log-probs of the tokens where ``loss_mask`` is 1, and their count, per row (position 0
# never counts; masked positions add exactly 0 and no gradient): the one masked sum in lm.logprobs.
masked_sequence_logps = masked_logprob_sum


def sequence_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward ``model`` on a :func:`collate_pairs` batch: per-row (summed log-probs, token counts)."""
    logits = forward_logits(model, batch["input_ids"], batch["attention_mask"])
    return masked_logprob_sum(logits, batch["input_ids"],
                              batch["loss_mask"].bool() & batch["attention_mask"].bool())


class PairLogps(NamedTuple):
    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor


def pair_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> PairLogps:
    """Chosen and rejected summed log-probs (and token counts) of a :func:`collate_pairs` batch."""
    logps, counts = sequence_logps(model, batch)
    c, r = logps.chunk(2)
    cl, rl = counts.chunk(2)
    return PairLogps(c, r, cl, rl)


@contextlib.contextmanager
def _reference_context(policy: torch.nn.Module, reference: torch.nn.Module | None):
    """The model that gives reference log-probs: ``reference``; else the policy with its adapters
    disabled (PEFT) or, without adapters, the policy as it is before any update."""
    if reference is not None:
        yield reference
    elif hasattr(policy, "disable_adapter"):
        with policy.disable_adapter():
            yield policy
    else:
        yield policy


@torch.no_grad()
def reference_logps(policy: torch.nn.Module, reference: torch.nn.Module | None,
                    batch: dict[str, torch.Tensor]) -> PairLogps:
    """Reference log-probs of a batch (no grad, eval mode, training mode restored)."""
    with _reference_context(policy, reference) as ref:
        was_training = ref.training
        ref.eval()
        try:
            return pair_logps(ref, batch)
        finally:
            ref.train(was_training)


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------

@dataclass
class DPOConfig:
    """DPO training. Defaults follow Llama 3 post-training (β=0.1) except the NLL weight (0 here;
    Llama 3 uses 0.2) and a learning rate sized for the tiny herd."""

    beta: float = 0.1
    loss_type: str = "sigmoid"           # sigmoid (DPO/cDPO) | ipo
    label_smoothing: float = 0.0         # cDPO ε for pairs that carry none, in [0, 0.5]
    nll_weight: float = 0.0              # weight of the chosen-answer NLL term (Llama 3: 0.2)
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0                # linear warmup, then constant (or linear decay)
    lr_schedule: str = "constant"        # constant | linear (decay to 0 at the last step)
    epochs: int = 1
    batch_size: int = 8
    max_len: int = 512
    grad_clip: float = 1.0               # 0 disables clipping
    exclude_format_tokens: bool = True   # drop Llama 3 headers / eot / bos from the log-ratios
    exclude_token_ids: list[int] = field(default_factory=list)  # further ids to drop
    append_eos: bool = True              # text completions end with EOS
    seed: int = 0
    log_every: int = 1

    def __post_init__(self) -> None:
        check_range("beta", self.beta, 0.0, None, lo_open=True)
        check_choice("loss_type", self.loss_type, LOSS_TYPES)
        check_range("label_smoothing", self.label_smoothing, 0.0, 0.5)
        if self.loss_type == "ipo" and self.label_smoothing != 0:
            raise ConfigError(f"config key 'label_smoothing' = {self.label_smoothing!r} must be 0 "
                              "with config key 'loss_type' = 'ipo' (cDPO ε applies to 'sigmoid' "
                              "only)")
        check_range("nll_weight", self.nll_weight, 0.0, None)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("weight_decay", self.weight_decay, 0.0, None)
        check_range("warmup_steps", self.warmup_steps, 0, None)
        check_choice("lr_schedule", self.lr_schedule, ("constant", "linear"))
        check_range("epochs", self.epochs, 1, None)
        check_range("batch_size", self.batch_size, 1, None)
        check_range("max_len", self.max_len, 2, None)
        check_range("grad_clip", self.grad_clip, 0.0, None)
        check_range("log_every", self.log_every, 1, None)
        for i, t in enumerate(self.exclude_token_ids):
            check_range(f"exclude_token_ids[{i}]", t, 0, None)


def excluded_ids(tokenizer: Any, config: DPOConfig) -> set[int]:
    """The token ids dropped from the log-ratios under ``config``."""
    ids = set(int(t) for t in config.exclude_token_ids)
    if config.exclude_format_tokens and tokenizer is not None:
        ids |= set(formatting_token_ids(tokenizer))
    return ids


def _lr_factor(step: int, total: int, config: DPOConfig) -> float:
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "linear":
        span = max(1, total - config.warmup_steps)
        return max(0.0, 1.0 - (step - config.warmup_steps) / span)
    return 1.0


def train_dpo(policy: torch.nn.Module, reference: torch.nn.Module | None, tokenizer: Any,
              pairs: Sequence[PreferencePair], config: DPOConfig, run: Any = None, *,
              start_step: int = 0) -> dict[str, Any]:
    """Train ``policy`` with the DPO-family loss on ``pairs``; returns summary metrics.

    The reference log-probs of every pair are computed once, before the first update, under no
    grad — with ``reference`` or, when it is ``None``, with the policy itself (adapters disabled
    for a PEFT model), so no copy of the policy is needed. Each optimizer step logs ``loss``,
    ``dpo_loss``, ``nll``, ``rewards_chosen``, ``rewards_rejected``, ``margin``, ``accuracy``,
    ``lr`` and ``grad_norm`` to ``run`` (a :class:`reasonlab.runs.Run`) at ``start_step + step``.
    """
    from tqdm.auto import tqdm

    from reasonlab.device import autocast

    if not pairs:
        raise ValueError("train_dpo needs at least one preference pair")
    device = next(policy.parameters()).device
    pad_id = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    if pad_id is None:
        pad_id = getattr(getattr(policy, "config", None), "pad_token_id", None) or 0
    exclude = excluded_ids(tokenizer, config)
    bos_id = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None
    if bos_id is None:
        bos_id = getattr(getattr(policy, "config", None), "bos_token_id", None)
    encoded = truncate_pairs([encode_pair(p, tokenizer, append_eos=config.append_eos)
                              for p in pairs], config.max_len, bos_id)
    eps_all = torch.tensor([config.label_smoothing if p.epsilon is None else float(p.epsilon)
                            for p in pairs], dtype=torch.float32)
    if config.loss_type == "ipo" and bool((eps_all != 0).any()):
        raise ValueError("pairs carry a cDPO epsilon but loss_type is 'ipo'")

    def batch_of(idx: list[int]) -> dict[str, torch.Tensor]:
        b = collate_pairs([encoded[i] for i in idx], pad_token_id=pad_id, exclude_token_ids=exclude)
        return {k: v.to(device) for k, v in b.items()}

    # Reference log-probs: once per pair, before any update.
    n = len(encoded)
    ref_c = torch.zeros(n)
    ref_r = torch.zeros(n)
    for s in range(0, n, config.batch_size):
        idx = list(range(s, min(n, s + config.batch_size)))
        with autocast(device):
            ref = reference_logps(policy, reference, batch_of(idx))
        ref_c[idx] = ref.chosen.float().cpu()
        ref_r[idx] = ref.rejected.float().cpu()

    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, config))
    gen = torch.Generator().manual_seed(config.seed)
    policy.train()
    history: list[dict[str, float]] = []
    step = 0
    bar = tqdm(total=total, desc="dpo", leave=False, disable=total < 2)
    for _epoch in range(config.epochs):
        order = torch.randperm(n, generator=gen).tolist()
        for s in range(0, n, config.batch_size):
            idx = order[s:s + config.batch_size]
            batch = batch_of(idx)
            with autocast(device):
                pol = pair_logps(policy, batch)
            out = preference_loss(
                pol.chosen.float(), pol.rejected.float(), ref_c[idx].to(device), ref_r[idx].to(device),
                chosen_lengths=pol.chosen_lengths, rejected_lengths=pol.rejected_lengths,
                beta=config.beta, loss_type=config.loss_type,
                label_smoothing=eps_all[idx].to(device), nll_weight=config.nll_weight)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            if config.grad_clip > 0:
                gn = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip))
            else:
                gn = float(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params
                                          if p.grad is not None)))
            lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            rec = {
                "loss": float(out.loss.detach()),
                "dpo_loss": float(out.losses.detach().mean()),
                "nll": None if out.nll is None else float(out.nll),
                "rewards_chosen": float(out.chosen_rewards.mean()),
                "rewards_rejected": float(out.rejected_rewards.mean()),
                "margin": float(out.margins.mean()),
                "accuracy": float(out.accuracy),
                "lr": lr,
                "grad_norm": gn,
            }
            history.append(rec)
            if run is not None and (step % config.log_every == 0 or step == total - 1):
                run.log(step=start_step + step, **rec)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", margin=f"{rec['margin']:.3f}")
    bar.close()
    last = history[-min(len(history), steps_per_epoch):]  # the last epoch's steps
    return {
        "steps": step,
        "pairs": n,
        "final_loss": sum(h["loss"] for h in last) / len(last),
        "final_margin": sum(h["margin"] for h in last) / len(last),
        "final_accuracy": sum(h["accuracy"] for h in last) / len(last),
        "history": history,
    }
