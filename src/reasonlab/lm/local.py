"""``LocalLM``: the model interface over any HF causal LM in memory (CPU or CUDA).

Generation is our own decoding loop over the model with a ``DynamicCache``: prompts are left
padded, position ids come from the attention mask (so a padded row computes exactly what it would
alone), stop strings are checked after every step and finished rows are dropped from the batch.
``generate_from_prefix`` encodes a shared prefix once and expands its KV cache over the samples
(MCTS expansion). Scoring is teacher-forced with right padding.

Tokenization: a text is encoded with the tokenizer's special tokens (BOS) unless it already starts
with the BOS string (chat templates often write it). For ``score`` the prompt and
prompt+continuation are both encoded; the continuation is every token of the joint encoding after
the longest common prefix of the two, so a token that straddles the boundary (merges prompt and
continuation characters) is counted as continuation.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from reasonlab.device import autocast, pick_device
from reasonlab.lm import logprobs as F
from reasonlab.lm.base import (Generation, LanguageModel, Message, ScoredContinuation,
                               check_sampling_args)
from reasonlab.lm.chat_format import STOP_TOKENS

LONG_PROMPTS = ("refuse", "left")  # what generate does with a prompt longer than the context

log = logging.getLogger(__name__)


@dataclass
class AnswerProbs:
    """Teacher-forced probabilities of candidate answers to one prompt."""

    candidates: list[str]
    logprobs: list[float]  # log p(candidate | prompt), summed over its tokens
    num_tokens: list[int]
    normalized: list[float]  # p renormalized over the candidates (sums to 1)

    @property
    def probs(self) -> list[float]:
        """Raw sequence probabilities ``exp(logprob)``."""
        return [math.exp(lp) for lp in self.logprobs]

    @property
    def mean_logprobs(self) -> list[float]:
        """Length-normalized log-probabilities (per token)."""
        return [lp / max(n, 1) for lp, n in zip(self.logprobs, self.num_tokens)]


def _resolve_dtype(dtype, device: torch.device):
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str):
        return getattr(torch, dtype)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class LocalLM(LanguageModel):
    """A HF causal LM and its tokenizer behind :class:`LanguageModel`.

    ``device``: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda[:N]"``, or ``None`` to keep the
    model where it is (e.g. sharded with ``device_map``). ``batch_size`` bounds rows per forward.
    """

    def __init__(self, model, tokenizer, device: str | torch.device | None = "auto", *,
                 batch_size: int = 16, use_autocast: bool = True, long_prompts: str = "refuse"):
        if long_prompts not in LONG_PROMPTS:
            raise ValueError(f"long_prompts={long_prompts!r} is not one of {list(LONG_PROMPTS)}")
        self.long_prompts = long_prompts
        if device is not None and not getattr(model, "hf_device_map", None):
            model = model.to(pick_device(str(device)))
        self.model = model
        self.tokenizer = tokenizer
        self.device = model.get_input_embeddings().weight.device
        self.batch_size = int(batch_size)
        self.use_autocast = use_autocast
        self._cache_kw = F.cache_kwarg(model)
        self._has_logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_token_id = int(pad)
        self.stop_token_ids = self._find_stop_tokens()
        self.counters = {"forward_calls": 0, "forward_tokens": 0, "generated_tokens": 0}

    def reset_counters(self) -> dict[str, int]:
        """Return the cost counters and zero them. ``forward_tokens`` counts every input position
        pushed through the model (padding included); ``generated_tokens`` every sampled token."""
        old = dict(self.counters)
        self.counters = {k: 0 for k in self.counters}
        return old

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = "auto", dtype=None,
                        verify: bool = True, **kwargs) -> "LocalLM":
        """Load a local HF directory (safetensors weights only; nothing is downloaded).

        ``dtype=None``: bf16 on GPUs that support it, else float32; ``"auto"`` keeps the
        checkpoint's dtype; or any ``torch.dtype``/name. ``verify``: check the files against the
        folder's manifest when it has one (:mod:`reasonlab.lm.checkpoint`); a folder that cannot
        be loaded raises ModelLoadError naming the file and the cause in one line.
        """
        from reasonlab.lm.checkpoint import check_model_folder, load_causal_lm, load_tokenizer_from

        path = check_model_folder(path, verify=verify)
        dev = pick_device(str(device)) if device is not None else torch.device("cpu")
        tokenizer = load_tokenizer_from(path)
        model = load_causal_lm(path, verify=False, dtype=_resolve_dtype(dtype, dev))
        model.eval()
        return cls(model, tokenizer, device=device, **kwargs)

    # ------------------------------------------------------------------ helpers
    def _find_stop_tokens(self) -> set[int]:
        ids: set[int] = set()
        tok = self.tokenizer
        if tok.eos_token_id is not None:
            ids.add(int(tok.eos_token_id))
        gen_cfg = getattr(self.model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
        if eos is not None:
            ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
        vocab = tok.get_vocab()
        ids.update(int(vocab[t]) for t in STOP_TOKENS if t in vocab)
        return ids

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """Token ids of ``text``; BOS is added unless the text already starts with it."""
        if add_special_tokens is None:
            bos = self.tokenizer.bos_token
            add_special_tokens = not (bos and text.startswith(bos))
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)

    @contextlib.contextmanager
    def _inference(self):
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), autocast(self.device, self.use_autocast):
                yield
        finally:
            if was_training:
                self.model.train()

    def _count(self, ids: torch.Tensor) -> None:
        self.counters["forward_calls"] += 1
        self.counters["forward_tokens"] += int(ids.numel())

    def _forward(self, ids, attn, pos, cache, last_only: bool):
        self._count(ids)
        kwargs = {"input_ids": ids, "attention_mask": attn, "position_ids": pos,
                  "use_cache": True, self._cache_kw: cache}
        if last_only and self._has_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        return self.model(**kwargs).logits[:, -1]

    def _left_pad(self, rows: list[list[int]]):
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r):] = torch.tensor(r)
                attn[i, width - len(r):] = 1
        return ids.to(self.device), attn.to(self.device)

    def _generator(self, seed: int | None):
        if seed is None:
            return None
        return torch.Generator(device=self.device).manual_seed(int(seed))

    @staticmethod
    def _choose(logits, temperature: float, top_p: float, gen, rows: torch.Tensor | None = None,
                n_rows: int | None = None) -> torch.Tensor:
        """Greedy or sampled next tokens of ``logits`` [B,V].

        Sampling is ``torch.multinomial``'s own method written out (``argmax(p / q)`` with
        ``q ~ Exp(1)``, the same draws from ``gen``), with the noise drawn for all ``n_rows`` rows
        of the batch the loop started with and row ``rows[j]`` of it used for row ``j``: a row's
        sample does not depend on which other rows have finished and left the batch.
        """
        if temperature == 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        if top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            before = sorted_p.cumsum(-1) - sorted_p  # mass of strictly more likely tokens
            sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        n = probs.shape[0] if n_rows is None else n_rows
        q = torch.empty((n, probs.shape[-1]), dtype=probs.dtype, device=probs.device)
        q.exponential_(1, generator=gen)
        if rows is not None:
            q = q.index_select(0, rows)
        return (probs / q).argmax(-1)

    @staticmethod
    def _find_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
        best = None
        for s in stops:
            i = text.find(s)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        return best

    def _token_masks(self, stops: Sequence[str], vocab: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(stop tokens, tokens that may complete a stop string) as boolean masks over the vocab.

        A stop string completed by the newest token ends inside that token's text, so a token
        whose own text lacks every stop string's last character cannot complete one (an ASCII
        byte decodes to itself even next to partial UTF-8 bytes). Tokens holding partial UTF-8
        bytes are always checked when a stop string ends in a non-ASCII character, and every
        token is when one ends in a plain space (some decoders strip a token's leading space
        when it is decoded alone)."""
        key = (tuple(stops), vocab, str(device), frozenset(self.stop_token_ids))
        cached = getattr(self, "_mask_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        stop_tok = torch.zeros(vocab, dtype=torch.bool)
        stop_tok[[t for t in self.stop_token_ids if 0 <= t < vocab]] = True
        lasts = {st[-1] for st in stops}
        if not stops:
            may_stop = torch.zeros(vocab, dtype=torch.bool)
        elif " " in lasts:
            may_stop = torch.ones(vocab, dtype=torch.bool)
        else:
            texts = self.tokenizer.batch_decode([[i] for i in range(vocab)],
                                                skip_special_tokens=False,
                                                clean_up_tokenization_spaces=False)
            partial = any(ord(c) > 127 for c in lasts)
            may_stop = torch.tensor([any(c in t for c in lasts) or (partial and "\ufffd" in t)
                                     for t in texts], dtype=torch.bool)
        masks = (stop_tok.to(device), (may_stop & ~stop_tok).to(device))
        self._mask_cache = (key, masks)
        return masks

    def _decode_loop(self, cache, logits, attn, pos, *, max_new_tokens, temperature, top_p,
                     stops, gen) -> list[Generation]:
        """Sample from ``logits`` [B,V] onward; ``attn`` covers the cache, ``pos`` [B] is next.

        The per-step work is a few batched tensor operations: tokens and log-probs go into
        preallocated [B, max_new_tokens] tensors, stop tokens are found with a vocabulary mask,
        and only the rows whose new token may complete a stop string (another mask) are decoded.
        Finished rows stay in the batch until a quarter of it has finished; then the cache is
        re-indexed once to drop them all.
        """
        n, vocab = logits.shape
        dev = logits.device
        stop_tok, may_stop = self._token_masks(stops, vocab, dev)
        # A stop string completed by the newest token lies in the text of the last few tokens
        # (a character spans at most 4 byte tokens), so a decoded tail is a cheap pre-check; keys
        # drop leading whitespace, which some decoders strip from the first token of a text.
        tail = 4 * max((len(s) for s in stops), default=0) + 4
        keys = [s.lstrip() for s in stops]
        precheck = all(keys)
        flag_mask = stop_tok | may_stop
        toks = torch.zeros((n, max_new_tokens), dtype=torch.long, device=dev)
        lps: torch.Tensor | None = None
        width = attn.shape[1]
        unpadded = bool(attn.all())  # no padding: the model's own causal mask is the same mask
        attn = torch.cat([attn, attn.new_ones(n, max_new_tokens)], dim=1)
        row_ids = list(range(n))  # batch position -> original row
        rows_t: torch.Tensor | None = None  # the same as a tensor, None while it is 0..n-1
        alive = [True] * n
        n_alive = n
        out: list[Generation | None] = [None] * n

        def finish(j: int, step: int, reason: str, stop=None, text: str | None = None) -> None:
            nonlocal n_alive
            r = row_ids[j]
            ids = toks[r, :step + 1].tolist()
            lp = lps[r, :step + 1].tolist()
            if text is None:
                text = self.decode(ids[:-1] if reason == "stop" else ids)
            out[r] = Generation(text, ids, lp, reason, stop)
            alive[j] = False
            n_alive -= 1

        for step in range(max_new_tokens):
            tok = self._choose(logits, temperature, top_p, gen, rows_t, n)
            tok_lp = F.gather_logprobs(logits.unsqueeze(1), tok.unsqueeze(1)).squeeze(1)
            if lps is None:
                lps = torch.zeros((n, max_new_tokens), dtype=tok_lp.dtype, device=dev)
            if rows_t is None:
                toks[:, step] = tok
                lps[:, step] = tok_lp
            else:
                toks[rows_t, step] = tok
                lps[rows_t, step] = tok_lp
            self.counters["generated_tokens"] += n_alive
            flagged = flag_mask[tok].nonzero().flatten().tolist()
            for j in flagged:
                if not alive[j]:
                    continue
                r = row_ids[j]
                t = int(toks[r, step])
                if t in self.stop_token_ids:
                    finish(j, step, "stop", t)
                    continue
                if precheck:
                    lo = max(0, step + 1 - tail)
                    if self._find_stop(self.decode(toks[r, lo:step + 1].tolist()), keys) is None:
                        continue
                text = self.decode(toks[r, :step + 1].tolist())
                hit = self._find_stop(text, stops)
                if hit is not None:
                    finish(j, step, "stop", hit[1], text[:hit[0]])
            if step == max_new_tokens - 1:
                for j in range(len(row_ids)):
                    if alive[j]:
                        finish(j, step, "length")
            if n_alive == 0:
                break
            dead = len(row_ids) - n_alive
            if dead and dead * 4 >= len(row_ids):
                keep = [j for j in range(len(row_ids)) if alive[j]]
                idx = torch.tensor(keep, device=dev)
                cache.batch_select_indices(idx)
                attn, pos, tok = attn[idx], pos[idx], tok[idx]
                row_ids = [row_ids[j] for j in keep]
                rows_t = torch.tensor(row_ids, device=dev)
                alive = [True] * len(row_ids)
            mask = None if unpadded else attn[:, :width + step + 1]
            logits = self._forward(tok.unsqueeze(1), mask, pos.unsqueeze(1), cache, True)
            pos = pos + 1
        return [g if g is not None else Generation("", [], [], "length") for g in out]

    def context_length(self) -> int | None:
        """The model's context (``max_position_embeddings``), or None when it does not say."""
        n = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return int(n) if n else None

    def _fit_context(self, encoded: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Prompts that leave no room in the context are refused (``long_prompts="refuse"``) or
        cut from the left, BOS kept, to leave ``max_new_tokens`` (``"left"``, with a warning)."""
        ctx = self.context_length()
        if ctx is None:
            return encoded
        out = []
        for i, e in enumerate(encoded):
            if len(e) < ctx:
                out.append(e)
                continue
            if self.long_prompts == "refuse":
                raise ValueError(f"prompt {i} is {len(e)} tokens, longer than the model's context "
                                 f"of {ctx}; shorten it or truncate it from the left "
                                 "(long_prompts='left', the CLI's --truncate-prompt left)")
            bos = self.tokenizer.bos_token_id
            head = e[:1] if bos is not None and e[:1] == [bos] else []
            keep = max(1, ctx - max(1, max_new_tokens) - len(head))
            log.warning("prompt %d: %d tokens > context %d; kept its last %d tokens", i, len(e),
                        ctx, keep)
            out.append(head + e[len(e) - keep:])
        return out

    # ------------------------------------------------------------------ generation
    def _prefill(self, rows: list[list[int]]):
        """The prompts' forward pass: (cache, last logits [B,V], attention mask, next positions).

        Rows (sorted by length) whose lengths differ more than twofold run in separate groups,
        each left-padded only to its own longest row; the groups' KV caches are then merged,
        left-padded to the longest row. Padding is masked and positions come from the mask, so
        every row computes what it would in one padded batch, with far less padded work when
        one long prompt sits among short ones."""
        ids, attn = self._left_pad(rows)
        pos = F.position_ids_from_mask(attn)
        cache = F.new_cache(self.model)
        bounds = [0]
        for i in range(1, len(rows)):
            if len(rows[i]) > 2 * len(rows[bounds[-1]]):
                bounds.append(i)
        if len(bounds) == 1 or not hasattr(cache, "layers"):
            return cache, self._forward(ids, attn, pos, cache, True), attn, pos[:, -1] + 1
        bounds.append(len(rows))
        width = ids.shape[1]
        logits, keys, values = [], None, None
        for a, b in zip(bounds, bounds[1:]):
            g_ids, g_attn = self._left_pad(rows[a:b])
            g_cache = F.new_cache(self.model)
            logits.append(self._forward(g_ids, g_attn, F.position_ids_from_mask(g_attn),
                                        g_cache, True))
            pad = width - g_ids.shape[1]
            k = [torch.nn.functional.pad(layer.keys, (0, 0, pad, 0)) for layer in g_cache.layers]
            v = [torch.nn.functional.pad(layer.values, (0, 0, pad, 0)) for layer in g_cache.layers]
            keys = [[x] for x in k] if keys is None else [ks + [x] for ks, x in zip(keys, k)]
            values = [[x] for x in v] if values is None else [vs + [x] for vs, x in zip(values, v)]
        for layer, (ks, vs) in enumerate(zip(keys, values)):
            cache.update(torch.cat(ks), torch.cat(vs), layer)
        return cache, torch.cat(logits), attn, pos[:, -1] + 1

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 128,
                 temperature: float = 0.0, top_p: float = 1.0,
                 stop: Sequence[str] | None = None, seed: int | None = None,
                 batch_size: int | None = None) -> list[Generation]:
        """One continuation per prompt (greedy at ``temperature=0``), ``batch_size`` rows at a time
        (prompts of similar length are batched together; results keep the input order).

        Ends at a stop token (eos, Llama 3 ``<|eot_id|>``/``<|eom_id|>``/``<|end_of_text|>``) or
        a stop string; the text ends before it. ``token_ids``/``logprobs`` keep every sampled
        token, including a stop token and the token(s) that completed a stop string; logprobs
        are the model's (temperature 1, no top-p), so they agree with :meth:`score`. The same
        ``seed``, inputs and ``batch_size`` give the same samples.
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not a string")
        check_sampling_args(max_new_tokens, temperature, top_p)
        stops = [s for s in (stop or []) if s]
        gen = self._generator(seed)
        bs = batch_size or self.batch_size
        encoded = [self.encode(p) for p in prompts]
        if any(not e for e in encoded):
            raise ValueError("a prompt encodes to no tokens (give a tokenizer that adds BOS)")
        encoded = self._fit_context(encoded, max_new_tokens)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # less padding
        results: list[Generation | None] = [None] * len(encoded)
        with self._inference():
            for start in range(0, len(order), bs):
                idx = order[start:start + bs]
                if max_new_tokens == 0:
                    gens = [Generation("", [], [], "length") for _ in idx]
                else:
                    cache, logits, attn, pos = self._prefill([encoded[i] for i in idx])
                    gens = self._decode_loop(cache, logits, attn, pos,
                                             max_new_tokens=max_new_tokens,
                                             temperature=temperature, top_p=top_p,
                                             stops=stops, gen=gen)
                for i, g in zip(idx, gens):
                    results[i] = g
        return results  # type: ignore[return-value]

    def generate_from_prefix(self, prefix: str, n: int, *, suffixes: Sequence[str] | None = None,
                             max_new_tokens: int = 128, temperature: float = 0.0,
                             top_p: float = 1.0, stop: Sequence[str] | None = None,
                             seed: int | None = None,
                             batch_size: int | None = None) -> list[Generation]:
        """``n`` continuations of one shared ``prefix``, whose KV cache is computed once.

        The prefix cache is copied and expanded over each chunk of ``batch_size`` rows. With
        ``suffixes`` (``n`` strings, tokenized without special tokens and appended to the prefix's
        tokens) row ``i`` continues ``prefix + suffixes[i]``. Otherwise as :meth:`generate`.
        """
        check_sampling_args(max_new_tokens, temperature, top_p)
        if suffixes is not None and len(suffixes) != n:
            raise ValueError(f"got {len(suffixes)} suffixes for n={n}")
        stops = [s for s in (stop or []) if s]
        gen = self._generator(seed)
        bs = batch_size or self.batch_size
        prefix_ids = self.encode(prefix)
        if not prefix_ids:
            raise ValueError("the prefix encodes to no tokens")
        suffix_ids = [self.encode(s, add_special_tokens=False) for s in suffixes or []]
        p = len(prefix_ids)
        results: list[Generation] = []
        with self._inference():
            ids = torch.tensor([prefix_ids], device=self.device)
            attn = torch.ones_like(ids)
            prefix_cache = F.new_cache(self.model)
            prefix_logits = self._forward(ids, attn, F.position_ids_from_mask(attn),
                                          prefix_cache, True)
            for start in range(0, n, bs):
                b = min(bs, n - start)
                if max_new_tokens == 0:
                    results += [Generation("", [], [], "length") for _ in range(b)]
                    continue
                cache = F.expand_cache(prefix_cache, b)
                attn = torch.ones(b, p, dtype=torch.long, device=self.device)
                logits = prefix_logits.expand(b, -1)
                pos = torch.full((b,), p, dtype=torch.long, device=self.device)
                chunk = suffix_ids[start:start + b]
                if any(chunk):
                    s_ids, s_attn = self._left_pad(chunk)
                    attn = torch.cat([attn, s_attn], dim=1)
                    s_pos = F.position_ids_from_mask(attn)[:, p:]
                    s_logits = self._forward(s_ids, attn, s_pos, cache, True)
                    has = s_attn[:, -1].bool().unsqueeze(1)
                    logits = torch.where(has, s_logits, logits)
                    pos = s_pos[:, -1] + 1  # rows without a suffix: p - 1 + 1
                results += self._decode_loop(cache, logits, attn, pos,
                                             max_new_tokens=max_new_tokens,
                                             temperature=temperature, top_p=top_p,
                                             stops=stops, gen=gen)
        return results

    def sample_steps(self, prefix: str, n: int, *, stop: Sequence[str] = ("\n",),
                     temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 64,
                     seed: int | None = None) -> list[Generation]:
        """``n`` sampled next reasoning steps of ``prefix`` (one line each by default)."""
        return self.generate_from_prefix(prefix, n, stop=stop, temperature=temperature,
                                         top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)

    def prefix_next_logprobs(self, prefix: str, suffixes: Sequence[str], token_ids: Sequence[int],
                             *, batch_size: int | None = None) -> list[list[float]]:
        """``log p(t | prefix + suffix)`` of each of ``token_ids`` after each suffix, with the
        prefix's KV cache computed once and expanded over the suffixes (tokenized as in
        :meth:`generate_from_prefix`): e.g. the self-evaluations of sibling steps in MCTS."""
        suffix_ids = [self.encode(s, add_special_tokens=False) for s in suffixes]
        if any(not s for s in suffix_ids):
            raise ValueError("a suffix encodes to no tokens")
        prefix_ids = self.encode(prefix)
        if not prefix_ids:
            raise ValueError("the prefix encodes to no tokens")
        bs = batch_size or self.batch_size
        p = len(prefix_ids)
        out: list[list[float]] = []
        with self._inference():
            ids = torch.tensor([prefix_ids], device=self.device)
            attn = torch.ones_like(ids)
            prefix_cache = F.new_cache(self.model)
            self._forward(ids, attn, F.position_ids_from_mask(attn), prefix_cache, True)
            pick = torch.tensor(list(token_ids), dtype=torch.long, device=self.device)
            for start in range(0, len(suffix_ids), bs):
                chunk = suffix_ids[start:start + bs]
                cache = F.expand_cache(prefix_cache, len(chunk))
                s_ids, s_attn = self._left_pad(chunk)
                attn = torch.cat([torch.ones(len(chunk), p, dtype=torch.long, device=self.device),
                                  s_attn], dim=1)
                logits = self._forward(s_ids, attn, F.position_ids_from_mask(attn)[:, p:], cache, True)
                out += torch.log_softmax(logits.float(), dim=-1)[:, pick].cpu().tolist()
        return out

    # ------------------------------------------------------------------ scoring
    def _split(self, prompt: str, continuation: str) -> tuple[list[int], int]:
        p_ids = self.encode(prompt)
        full = self.encode(prompt + continuation)
        k = 0
        while k < min(len(p_ids), len(full)) and p_ids[k] == full[k]:
            k += 1
        if k == 0:
            raise ValueError("the prompt must encode to at least one token to score a "
                             "continuation (give a non-empty prompt or a tokenizer that adds BOS)")
        return full, k

    def score(self, prompts: Sequence[str], continuations: Sequence[str], *,
              batch_size: int | None = None) -> list[ScoredContinuation]:
        """Teacher-forced ``log p(token | prefix)`` of each continuation token (right padding)."""
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        splits = [self._split(p, c) for p, c in zip(prompts, continuations)]
        bs = batch_size or self.batch_size
        order = sorted(range(len(splits)), key=lambda i: len(splits[i][0]))
        out: list[ScoredContinuation | None] = [None] * len(splits)
        with self._inference():
            for start in range(0, len(order), bs):
                rows = order[start:start + bs]
                chunk = [splits[i] for i in rows]
                width = max(len(f) for f, _ in chunk)
                ids = torch.full((len(chunk), width), self.pad_token_id, dtype=torch.long)
                attn = torch.zeros((len(chunk), width), dtype=torch.long)
                for i, (f, _) in enumerate(chunk):
                    ids[i, :len(f)] = torch.tensor(f)
                    attn[i, :len(f)] = 1
                ids, attn = ids.to(self.device), attn.to(self.device)
                self._count(ids)
                lp = F.token_logprobs(F.forward_logits(self.model, ids, attn), ids).cpu()
                for i, (f, k) in enumerate(chunk):
                    vals = lp[i, k:len(f)].tolist()
                    out[rows[i]] = ScoredContinuation(list(f[k:]), vals, [True] * len(vals))
        return out  # type: ignore[return-value]

    def answer_probs(self, prompt: str, candidates: Sequence[str]) -> AnswerProbs:
        """``p(candidate | prompt)`` for each candidate, raw and normalized over the candidates."""
        if not candidates:
            raise ValueError("no candidates")
        scored = self.score([prompt] * len(candidates), list(candidates))
        lps = torch.tensor([s.total for s in scored], dtype=torch.float64)
        norm = torch.softmax(lps, dim=0).tolist()
        return AnswerProbs(list(candidates), lps.tolist(), [s.num_tokens for s in scored], norm)

    # ------------------------------------------------------------------ chat
    def apply_chat_template(self, messages: Sequence[Message],
                            add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this tokenizer has no chat template; set tokenizer.chat_template "
                             "or use generate() with plain prompts")
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    # ------------------------------------------------------------------ gradients (GCG, DPO)
    @property
    def embedding_matrix(self) -> torch.Tensor:
        """The input embedding weight ``[V, D]``."""
        return self.model.get_input_embeddings().weight

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of ``input_ids`` (differentiable w.r.t. the embedding weight)."""
        return self.model.get_input_embeddings()(input_ids.to(self.device))

    def batched_target_loss(self, input_ids: torch.Tensor, target: slice | torch.Tensor, *,
                            attention_mask: torch.Tensor | None = None,
                            prefix_ids: torch.Tensor | None = None,
                            batch_size: int | None = None) -> torch.Tensor:
        """Per-row mean CE of the target tokens; see :func:`logprobs.batched_target_loss`."""
        with autocast(self.device, self.use_autocast):
            return F.batched_target_loss(self.model, input_ids, target,
                                         attention_mask=attention_mask, prefix_ids=prefix_ids,
                                         batch_size=batch_size or 8 * self.batch_size)

    def sequence_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          labels_mask: torch.Tensor, *, average: bool = False) -> torch.Tensor:
        """Differentiable per-sequence log-probabilities; see :func:`logprobs.sequence_logprobs`."""
        return F.sequence_logprobs(self.model, input_ids.to(self.device),
                                   attention_mask.to(self.device), labels_mask.to(self.device),
                                   average=average)

    def onehot_grad(self, input_ids: torch.Tensor, positions: slice, target: slice
                    ) -> tuple[torch.Tensor, float]:
        """Gradient of the target loss w.r.t. the one-hot of ``positions``; see ``logprobs``."""
        return F.onehot_grad(self.model, input_ids, positions, target)
