"""Model-side tensor functions: teacher-forced log-probabilities, target losses, one-hot gradients.

Pure functions of a HF causal LM and token tensors, usable with gradients on (DPO, GCG) or inside
``torch.inference_mode()``. Conventions shared by every function here:

* per-token tensors are aligned with ``input_ids``: ``out[:, t] = log p(x_t | x_<t)``; position 0
  has no context and is never scored (its entry is 0 and masks at position 0 are ignored);
* masks are ``[B, T]`` booleans over input positions (the tokens being predicted);
* position ids come from the attention mask, so left and right padding both give the positions an
  unpadded sequence would have.
"""

from __future__ import annotations

import copy
import inspect
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, ... counting only attended tokens (padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def cache_kwarg(model) -> str:
    """The name ``model.forward`` takes the KV cache under (``cache`` in new transformers)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(model):
    """An empty ``DynamicCache`` for ``model`` (config-aware where the installed version allows)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers
        return DynamicCache()


def expand_cache(cache, n: int):
    """A copy of a batch-1 cache repeated ``n`` times along the batch (the original untouched)."""
    out = copy.deepcopy(cache)
    if n != 1:
        out.batch_repeat_interleave(n)
    return out


def gather_logprobs(pred_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log_softmax(pred_logits)[..., targets]`` in float32 (float64 kept): [B,T,V] -> [B,T]."""
    logits = pred_logits if pred_logits.dtype == torch.float64 else pred_logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``out[:, t] = log p(x_t | x_<t)`` ``[B, T]`` from full-sequence logits; ``out[:, 0] = 0``."""
    lp = gather_logprobs(logits[:, :-1], input_ids[:, 1:])
    return F.pad(lp, (1, 0))


def forward_logits(model, input_ids: torch.Tensor | None = None,
                   attention_mask: torch.Tensor | None = None, *,
                   inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Full-sequence logits with positions taken from the attention mask (any padding side)."""
    ref = input_ids if input_ids is not None else inputs_embeds[..., 0]
    if attention_mask is None:
        attention_mask = torch.ones(ref.shape, dtype=torch.long, device=ref.device)
    out = model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), use_cache=False)
    return out.logits


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row sum of ``values`` where ``mask`` is set; masked positions add exactly 0 (no NaN
    from a masked ``-inf``, no gradient to them)."""
    return torch.where(mask, values, torch.zeros_like(values)).sum(-1)


def masked_logprob_sum(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the tokens where ``mask`` is set, and their count, per row.

    ``logits[:, t]`` predicts ``input_ids[:, t+1]``; a token counts when ``mask`` is set at its own
    position (position 0, which nothing predicts, never counts). The one masked log-prob sum of
    scoring, DPO and SFT-style losses.
    """
    lp = token_logprobs(logits, input_ids)
    mask = mask.bool().clone()
    mask[:, 0] = False
    return masked_sum(lp, mask), mask.sum(-1)


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      labels_mask: torch.Tensor, *, average: bool = False) -> torch.Tensor:
    """Per-sequence sum (or mean with ``average``) of log p over the tokens in ``labels_mask``.

    Differentiable (the DPO building block). ``labels_mask[b, t]`` marks input token ``t`` as
    scored; padding and position 0 are excluded whatever the mask says.
    """
    logits = forward_logits(model, input_ids, attention_mask)
    total, n = masked_logprob_sum(logits, input_ids, labels_mask.bool() & attention_mask.bool())
    return total / n.clamp(min=1) if average else total


def _target_mask(target, input_ids: torch.Tensor) -> torch.Tensor:
    if isinstance(target, slice):
        mask = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
        mask[:, target] = True
        return mask
    return target.to(input_ids.device).bool()


def _masked_mean_ce(lp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return -masked_sum(lp, mask) / mask.sum(-1).clamp(min=1)


@dataclass
class PrefixState:
    """The KV cache of a shared prefix (batch 1) and its last position's logits ``[1, 1, V]``.

    Computed once by :func:`prefix_state` and reused by every later call on rows that follow the
    prefix (the candidates of every GCG step); never modified by them. Built under ``no_grad``
    (not inference mode), so a differentiable forward may attend to it.
    """

    cache: object
    last_logits: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.cache.get_seq_length())


def prefix_state(model, prefix_ids: torch.Tensor) -> PrefixState:
    """Run ``prefix_ids`` ``[P]`` once and keep its KV cache and last logits."""
    device = next(model.parameters()).device
    ids = prefix_ids.to(device).view(1, -1)
    if ids.shape[1] == 0:
        raise ValueError("the prefix is empty")
    cache = new_cache(model)
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, **{cache_kwarg(model): cache})
    return PrefixState(cache, out.logits[:, -1:].detach())


def _keeps_logits(model) -> str | None:
    """The keyword ``model.forward`` takes to compute logits at the last positions only."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return name
    return None


def _run_chunks(fn, n: int, batch_size: int):
    """``fn(start, stop)`` over ``[0, n)`` in chunks of ``batch_size`` rows, halving the chunk on
    a CUDA out-of-memory error; returns the list of ``(start, stop, result)``."""
    out, start, size = [], 0, max(1, batch_size)
    while start < n:
        stop = min(start + size, n)
        try:
            res = fn(start, stop)
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size //= 2
            log.warning("out of memory; retrying with chunks of %d", size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        out.append((start, stop, res))
        start = stop
    return out


def _prepare(model, input_ids, target, attention_mask, prefix_ids, prefix):
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    mask = _target_mask(target, input_ids)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.to(device)
    if prefix is None and prefix_ids is not None:
        prefix = prefix_state(model, prefix_ids)
    return input_ids, mask, attention_mask, prefix


def batched_target_loss(model, input_ids: torch.Tensor, target: slice | torch.Tensor, *,
                        attention_mask: torch.Tensor | None = None,
                        prefix_ids: torch.Tensor | None = None,
                        prefix: PrefixState | None = None,
                        batch_size: int = 128) -> torch.Tensor:
    """Mean cross-entropy of the target tokens of each row of ``input_ids`` ``[B, T]`` -> ``[B]``.

    ``target`` is a slice of input positions shared by all rows or a ``[B, T]`` boolean mask.
    With ``prefix_ids`` (``[P]``, shared tokens that precede every row) the prefix's KV cache is
    computed once and reused for every chunk; ``prefix`` (from :func:`prefix_state`) passes one
    computed earlier, so repeated calls skip the prefix forward too. Target positions still index
    ``input_ids`` and position 0 is then scorable. Logits are computed only from the first target
    position on where the model allows it. Rows are processed ``batch_size`` at a time; on a CUDA
    out-of-memory error the chunk is halved and retried. No gradients.
    """
    with torch.inference_mode():
        input_ids, mask, attention_mask, prefix = _prepare(model, input_ids, target, attention_mask,
                                                           prefix_ids, prefix)
        cache, last = (prefix.cache, prefix.last_logits) if prefix is not None else (None, None)
        losses = torch.empty(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
        for a, b, res in _run_chunks(
                lambda a, b: _chunk_loss(model, input_ids[a:b], mask[a:b], attention_mask[a:b],
                                         cache, last),
                input_ids.shape[0], batch_size):
            losses[a:b] = res
    return losses


def batched_target_scores(model, input_ids: torch.Tensor, target: slice | torch.Tensor, *,
                          attention_mask: torch.Tensor | None = None,
                          prefix_ids: torch.Tensor | None = None,
                          prefix: PrefixState | None = None,
                          batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`batched_target_loss` plus, per row, whether the argmax of every target position is
    the target token (greedy decoding would reproduce the target): ``([B] losses, [B] bools)``."""
    with torch.inference_mode():
        input_ids, mask, attention_mask, prefix = _prepare(model, input_ids, target, attention_mask,
                                                           prefix_ids, prefix)
        cache, last = (prefix.cache, prefix.last_logits) if prefix is not None else (None, None)
        n = input_ids.shape[0]
        losses = torch.empty(n, dtype=torch.float32, device=input_ids.device)
        exact = torch.empty(n, dtype=torch.bool, device=input_ids.device)
        for a, b, (lv, ok) in _run_chunks(
                lambda a, b: _chunk_scores(model, input_ids[a:b], mask[a:b], attention_mask[a:b],
                                           cache, last),
                n, batch_size):
            losses[a:b], exact[a:b] = lv, ok
    return losses, exact


def _chunk_loss(model, ids, mask, attn, prefix_cache, prefix_last) -> torch.Tensor:
    return _chunk_scores(model, ids, mask, attn, prefix_cache, prefix_last)[0]


def _chunk_scores(model, ids, mask, attn, prefix_cache, prefix_last
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean target CE and exact greedy match; logits only where a target is predicted."""
    b, t = ids.shape
    mask = mask & attn.bool()
    if prefix_cache is None:
        mask = mask.clone()
        mask[:, 0] = False
    cols = mask.any(0).nonzero()
    first = int(cols[0]) if cols.numel() else t - 1
    if prefix_cache is None:
        first = max(first, 1)
    keep = t - max(first - 1, 0)  # logits at positions first-1 .. t-1
    kw = {}
    name = _keeps_logits(model)
    if name is not None and keep < t:
        kw[name] = keep
    if prefix_cache is None:
        pos = position_ids_from_mask(attn)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False,
                       **kw).logits
    else:
        p = prefix_cache.get_seq_length()
        cache = expand_cache(prefix_cache, b)
        full_attn = torch.cat([torch.ones(b, p, dtype=attn.dtype, device=attn.device), attn], dim=1)
        pos = position_ids_from_mask(full_attn)[:, p:]
        logits = model(input_ids=ids, attention_mask=full_attn, position_ids=pos, use_cache=True,
                       **{cache_kwarg(model): cache}, **kw).logits
    logits = logits[:, -keep:]  # a model that ignored the keyword gave all t positions
    pred = logits[:, :-1]
    if first == 0:  # the first row token is predicted by the prefix's last position
        pred = torch.cat([prefix_last.expand(b, 1, -1), pred], dim=1)
    tokens, m = ids[:, first:], mask[:, first:]
    lp = gather_logprobs(pred, tokens)
    hit = (pred.argmax(-1) == tokens) | ~m
    return _masked_mean_ce(lp, m), hit.all(-1)


def onehot_grad(model, input_ids: torch.Tensor, positions: slice, target: slice, *,
                prefix: PrefixState | None = None) -> tuple[torch.Tensor, float]:
    """Gradient of the target's mean cross-entropy w.r.t. a one-hot matrix of some input tokens.

    ``input_ids`` is one sequence ``[T]``; the tokens at ``positions`` are replaced by
    ``one_hot @ W_embed`` (same values, now differentiable) and the loss is the mean CE of the
    tokens at ``target``. With ``prefix`` (:func:`prefix_state` of the tokens before
    ``input_ids``) only ``input_ids`` is run, attending to the prefix's cached keys and values,
    and the target may start at position 0. Returns ``(grad [L, V], loss)``. Parameter ``.grad``
    is left untouched.
    """
    emb_layer = model.get_input_embeddings()
    weight = emb_layer.weight
    ids = input_ids.to(weight.device).view(-1)
    chosen = ids[positions]
    one_hot = torch.zeros(chosen.numel(), weight.shape[0], dtype=weight.dtype, device=weight.device)
    one_hot.scatter_(1, chosen.unsqueeze(1), 1.0)
    one_hot.requires_grad_(True)
    with torch.enable_grad():
        embeds = emb_layer(ids.unsqueeze(0)).detach()
        start, stop, _ = positions.indices(ids.numel())
        embeds = torch.cat([embeds[:, :start], (one_hot @ weight).unsqueeze(0), embeds[:, stop:]],
                           dim=1)
        mask = _target_mask(target, ids.unsqueeze(0))
        if prefix is None:
            logits = forward_logits(model, inputs_embeds=embeds)
            lp = token_logprobs(logits, ids.unsqueeze(0))
            if mask[:, 0].any():
                raise ValueError("the target cannot include position 0 (it has no context)")
        else:
            p, t = prefix.length, ids.numel()
            attn = torch.ones(1, p + t, dtype=torch.long, device=weight.device)
            pos = torch.arange(p, p + t, device=weight.device).view(1, -1)
            logits = model(inputs_embeds=embeds, attention_mask=attn, position_ids=pos,
                           use_cache=True, **{cache_kwarg(model): expand_cache(prefix.cache, 1)}).logits
            pred = torch.cat([prefix.last_logits.to(logits.dtype), logits[:, :-1]], dim=1)
            lp = gather_logprobs(pred, ids.unsqueeze(0))
        loss = _masked_mean_ce(lp, mask)[0]
        (grad,) = torch.autograd.grad(loss, one_hot)
    return grad, float(loss.detach())
