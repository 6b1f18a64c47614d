"""Greedy Coordinate Gradient (GCG) adversarial suffixes, with optional probe sampling.

GCG (Zou et al. 2023, "Universal and Transferable Adversarial Attacks on Aligned Language Models",
arXiv:2307.15043 §2.2–2.3, Algorithms 1–2): the prompt is the chat template around the user
message with an adversarial suffix, followed by the target string ("Sure, here is ...") as the
start of the reply. Each step takes the gradient of the target's mean cross-entropy w.r.t. a
one-hot matrix of the suffix tokens, draws ``search_width`` candidates that each replace
``n_replace`` positions with a token from that position's top-k of the negative gradient
(disallowed tokens masked out), keeps those that survive decode→encode, scores them all (batched,
reusing the KV cache of the part before the suffix) and moves to the best. Several prompts share
one universal suffix (gradients summed, losses averaged) and several target models may be attacked
at once (they must share the tokenizer, since the one-hot gradients are added).

Probe sampling (Zhao et al. 2024, arXiv:2403.01251 §3, Algorithm 1) replaces "score all
candidates with the target" by: a draft model scores all of them, the target scores a random
probe set, the Spearman agreement of the two on the probe set sizes a filtered set of the draft's
best candidates that the target scores too, and the winner is the target's best of probe ∪
filtered (:mod:`reasonlab.attacks.probe`).

Compared against GraySwanAI/nanoGCG (``nanogcg/gcg.py``: ``GCGConfig``, ``sample_ids_from_grad``,
``filter_ids``, ``ProbeSamplingConfig``) and zhaoyiran924/Probe-Sampling
(``llm_attacks/gcg/gcg_attack.py``); the benchmark ``benchmarks/gcg_probe.py`` runs nanoGCG on the
same weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from reasonlab.config import ConfigError, check_range
from reasonlab.lm.logprobs import (PrefixState, batched_target_scores, forward_logits, onehot_grad,
                                   prefix_state)

log = logging.getLogger(__name__)

OPTIM_STR = "{optim_str}"


@dataclass
class ProbeConfig:
    """Probe sampling (arXiv:2403.01251): probe set ``B / sampling_factor``, filtered set
    ``max(1, int((1 - alpha) * B / r))`` (nanoGCG's defaults: 16 and 8)."""

    enabled: bool = False
    sampling_factor: int = 16
    r: int = 8

    def __post_init__(self) -> None:
        check_range("probe.sampling_factor", self.sampling_factor, 1, 1 << 16)
        check_range("probe.r", self.r, 1, 1 << 16)


@dataclass
class GCGConfig:
    """One GCG attack (nanoGCG's defaults except where noted)."""

    num_steps: int = 250
    search_width: int = 512  # candidates per step (B)
    topk: int = 256  # tokens per position to draw from
    n_replace: int = 1  # positions changed per candidate
    optim_str_init: str = "x x x x x x x x x x x x x x x x x x x x"
    buffer_size: int = 0  # 0: continue from each step's winner; k: from the best of k kept
    allow_non_ascii: bool = False
    filter_ids: bool = True  # keep only candidates that survive decode -> encode
    use_prefix_cache: bool = True
    eval_batch_size: int = 512  # candidates per forward (halved on out-of-memory)
    early_stop: bool = True  # stop when greedy decoding reproduces the target
    seed: int = 0
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self) -> None:
        check_range("num_steps", self.num_steps, 0, 1_000_000)
        check_range("search_width", self.search_width, 1, 1 << 20)
        check_range("topk", self.topk, 1, 1 << 20)
        check_range("n_replace", self.n_replace, 1, 1024)
        check_range("buffer_size", self.buffer_size, 0, 1 << 16)
        check_range("eval_batch_size", self.eval_batch_size, 1, 1 << 20)
        if not self.optim_str_init.strip():
            raise ConfigError("config key 'optim_str_init' must be a non-empty string")
        if isinstance(self.probe, dict):
            from reasonlab.config import from_dict

            self.probe = from_dict(ProbeConfig, self.probe, prefix="probe.")


# ---------------------------------------------------------------- prompts
@dataclass
class PromptIds:
    """Token ids of one attacked prompt: ``before + suffix + after + target``."""

    before: torch.Tensor  # [P] (bos, template, the user message)
    after: torch.Tensor  # [A] (rest of the template, the assistant header)
    target: torch.Tensor  # [T]


def split_prompt(tokenizer, message: str, *, chat: bool | None = None) -> tuple[str, str]:
    """(text before the suffix, text after it) for ``message``.

    The suffix goes at ``{optim_str}`` in the message, else right after it (as nanoGCG).
    ``chat=None`` uses the tokenizer's chat template when it has one; without a template the
    message is plain text and the target follows the suffix directly.
    """
    if OPTIM_STR not in message:
        message = message + OPTIM_STR
    if message.count(OPTIM_STR) != 1:
        raise ValueError("the message must hold '{optim_str}' at most once")
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    if use_chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": message}],
                                             tokenize=False, add_generation_prompt=True)
    else:
        text = message
    before, after = text.split(OPTIM_STR)
    return before, after


def encode_prompt(tokenizer, message: str, target: str, *, chat: bool | None = None) -> PromptIds:
    """Token ids of ``message`` (around the suffix) and ``target``; bos prepended where missing."""
    before_s, after_s = split_prompt(tokenizer, message, chat=chat)
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    before = enc(before_s)
    bos = tokenizer.bos_token_id
    if bos is not None and (not before or before[0] != bos):
        before = [bos] + before
    t = enc(target)
    if not t:
        raise ValueError("the target encodes to no tokens")
    return PromptIds(torch.tensor(before), torch.tensor(enc(after_s), dtype=torch.long),
                     torch.tensor(t))


# ---------------------------------------------------------------- the pure pieces
def disallowed_token_ids(tokenizer, vocab_size: int, *, allow_non_ascii: bool = False
                         ) -> torch.Tensor:
    """Ids a suffix may never use: special/added tokens, ids past the tokenizer, and (unless
    ``allow_non_ascii``) tokens whose text is empty, not ASCII or not printable."""
    bad = set(int(i) for i in tokenizer.all_special_ids)
    bad.update(int(i) for i in getattr(tokenizer, "added_tokens_decoder", {}) or {})
    n_tok = len(tokenizer)
    bad.update(range(n_tok, vocab_size))
    if not allow_non_ascii:
        for i in range(min(n_tok, vocab_size)):
            s = tokenizer.decode([i])
            if not s or not (s.isascii() and s.isprintable()):
                bad.add(i)
    return torch.tensor(sorted(b for b in bad if b < vocab_size), dtype=torch.long)


def sample_candidates(ids: torch.Tensor, grad: torch.Tensor, search_width: int, topk: int,
                      n_replace: int, not_allowed: torch.Tensor | None,
                      generator: torch.Generator) -> torch.Tensor:
    """``[B, L]`` candidates: each replaces ``n_replace`` random positions of ``ids`` ``[L]`` by
    a token drawn uniformly from that position's top-``k`` of ``-grad`` ``[L, V]``.

    Disallowed ids get ``+inf`` gradient and so are never among the top-k (k is capped at the
    number of allowed tokens).
    """
    grad = grad.detach().float().cpu().clone()
    length, vocab = grad.shape
    if not_allowed is not None and not_allowed.numel():
        grad[:, not_allowed.cpu()] = float("inf")
    n_ok = vocab - (not_allowed.numel() if not_allowed is not None else 0)
    if n_ok < 1:
        raise ValueError("every token is disallowed")
    k = min(topk, n_ok)
    top = (-grad).topk(k, dim=1).indices  # [L, k]
    n_replace = min(n_replace, length)
    pos = torch.argsort(torch.rand(search_width, length, generator=generator), dim=1)[:, :n_replace]
    choice = torch.randint(0, k, (search_width, n_replace, 1), generator=generator)
    vals = top[pos].gather(2, choice).squeeze(2)  # [B, n_replace]
    return ids.cpu().view(1, -1).repeat(search_width, 1).scatter_(1, pos, vals)


def retokenizes(tokenizer, ids: Sequence[int]) -> bool:
    """True when decoding ``ids`` and encoding the text again gives ``ids`` exactly."""
    text = tokenizer.decode(list(ids))
    return tokenizer(text, add_special_tokens=False)["input_ids"] == list(ids)


def filter_candidates(tokenizer, cands: torch.Tensor) -> torch.Tensor:
    """The rows of ``cands`` that survive decode → encode (duplicates dropped, order kept).

    One batched decode and one batched encode for all rows (what :func:`retokenizes` checks row
    by row)."""
    rows, seen = [], set()
    for row in cands.tolist():
        key = tuple(row)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    if not rows:
        return cands.new_zeros((0, cands.shape[1]))
    texts = tokenizer.batch_decode(rows)
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    keep = [row for row, e in zip(rows, enc) if list(e) == row]
    return torch.tensor(keep, dtype=torch.long).view(-1, cands.shape[1])


def prompt_rows(p: PromptIds, suffixes: torch.Tensor) -> tuple[torch.Tensor, slice]:
    """``suffix + after + target`` rows ``[B, L+A+T]`` and the target's slice in them."""
    b = suffixes.shape[0]
    rows = torch.cat([suffixes, p.after.view(1, -1).expand(b, -1),
                      p.target.view(1, -1).expand(b, -1)], dim=1)
    start = suffixes.shape[1] + p.after.numel()
    return rows, slice(start, start + p.target.numel())


def target_scores(model, p: PromptIds, suffixes: torch.Tensor, *, batch_size: int,
                  use_prefix_cache: bool = True, prefix: PrefixState | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean CE of the target after each suffix in ``suffixes`` ``[B, L]`` -> ``[B]`` (no grad),
    and whether greedy decoding after each would reproduce the target exactly ``[B]``.

    With ``use_prefix_cache`` the part before the suffix is not run again: its KV cache ``prefix``
    (:func:`reasonlab.lm.logprobs.prefix_state` of ``p.before``; computed here when not given) is
    reused; chunks of ``batch_size`` rows, halved on out-of-memory
    (:func:`reasonlab.lm.logprobs.batched_target_scores`).
    """
    rows, tgt = prompt_rows(p, suffixes)
    if use_prefix_cache:
        if prefix is None:
            prefix = prefix_state(model, p.before)
        lv, ok = batched_target_scores(model, rows, tgt, prefix=prefix, batch_size=batch_size)
        return lv.cpu(), ok.cpu()
    full = torch.cat([p.before.view(1, -1).expand(rows.shape[0], -1), rows], dim=1)
    off = p.before.numel()
    lv, ok = batched_target_scores(model, full, slice(tgt.start + off, tgt.stop + off),
                                   batch_size=batch_size)
    return lv.cpu(), ok.cpu()


def target_losses(model, p: PromptIds, suffixes: torch.Tensor, *, batch_size: int,
                  use_prefix_cache: bool = True, prefix: PrefixState | None = None) -> torch.Tensor:
    """The losses of :func:`target_scores` ``[B]``."""
    return target_scores(model, p, suffixes, batch_size=batch_size,
                         use_prefix_cache=use_prefix_cache, prefix=prefix)[0]


def suffix_grad(model, p: PromptIds, suffix: torch.Tensor, *, prefix: PrefixState | None = None
                ) -> tuple[torch.Tensor, float]:
    """One-hot gradient ``[L, V]`` of the target loss w.r.t. the suffix, and that loss; with
    ``prefix`` (the KV cache of ``p.before``) only suffix, after and target are run."""
    if prefix is not None:
        ids = torch.cat([suffix, p.after, p.target])
        t0 = suffix.numel() + p.after.numel()
        return onehot_grad(model, ids, slice(0, suffix.numel()), slice(t0, t0 + p.target.numel()),
                           prefix=prefix)
    ids = torch.cat([p.before, suffix, p.after, p.target])
    s0 = p.before.numel()
    t0 = s0 + suffix.numel() + p.after.numel()
    return onehot_grad(model, ids, slice(s0, s0 + suffix.numel()), slice(t0, t0 + p.target.numel()))


def greedy_reproduces(model, p: PromptIds, suffix: torch.Tensor) -> bool:
    """True when greedy decoding after the prompt yields exactly the target tokens (the
    teacher-forced argmax equals the target at every position, which is the same thing)."""
    device = next(model.parameters()).device
    ids = torch.cat([p.before, suffix.cpu(), p.after, p.target]).view(1, -1).to(device)
    with torch.inference_mode():
        logits = forward_logits(model, ids)
    t0 = ids.shape[1] - p.target.numel()
    pred = logits[0, t0 - 1:-1].argmax(-1).cpu()
    return bool(torch.equal(pred, p.target))


# ---------------------------------------------------------------- the attack
@dataclass
class StepRecord:
    step: int
    loss: float  # the step winner's target loss
    best_loss: float
    target_forwards: int  # cumulative: candidate sequences + gradient passes through targets
    draft_forwards: int
    time_s: float  # cumulative wall time
    n_candidates: int
    alpha: float | None = None
    suffix: str = ""


@dataclass
class GCGResult:
    best_suffix: str
    best_ids: list[int]
    best_loss: float
    steps: list[StepRecord]
    stopped_early: bool
    target_forwards: int
    draft_forwards: int
    time_s: float

    @property
    def best_losses(self) -> list[float]:
        return [s.best_loss for s in self.steps]


class GCG:
    """GCG over one or more target models that share a tokenizer, for one or more prompts.

    ``models``: one HF causal LM or a list; ``draft``: ``(model, tokenizer)`` for probe sampling
    (its own tokenizer allowed). ``chat=None`` uses the tokenizer's chat template if any.
    """

    def __init__(self, models, tokenizer, cfg: GCGConfig, *, draft=None, chat: bool | None = None):
        self.models = list(models) if isinstance(models, (list, tuple)) else [models]
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.chat = chat
        vocab = self.models[0].get_input_embeddings().weight.shape[0]
        for m in self.models[1:]:
            if m.get_input_embeddings().weight.shape[0] != vocab:
                raise ValueError("target models must share the tokenizer (their vocabularies differ)")
        self.vocab_size = vocab
        self.not_allowed = disallowed_token_ids(tokenizer, vocab, allow_non_ascii=cfg.allow_non_ascii)
        if cfg.probe.enabled and draft is None:
            raise ValueError("probe sampling needs a draft model: pass draft=(model, tokenizer)")
        self.draft = draft
        self.draft_same_tokenizer = False
        if draft is not None:
            from reasonlab.attacks.probe import same_tokenizer

            self.draft_same_tokenizer = same_tokenizer(draft[1], tokenizer)
        self.eval_batch_size = cfg.eval_batch_size
        self.target_forwards = 0
        self.draft_forwards = 0
        self._prefixes: dict[tuple[int, int], PrefixState] = {}

    # -- prefix KV caches (the part before the suffix never changes during a run) -----------
    def _prefix(self, model, p: PromptIds) -> PrefixState | None:
        if not self.cfg.use_prefix_cache:
            return None
        key = (id(model), id(p))
        if key not in self._prefixes:
            self._prefixes[key] = prefix_state(model, p.before)
        return self._prefixes[key]

    # -- losses ------------------------------------------------------------
    def candidate_scores(self, prompts: Sequence[PromptIds], cands: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean target loss over every (model, prompt) for each candidate ``[B]``, and whether
        greedy decoding reproduces every target after it ``[B]``."""
        total = torch.zeros(cands.shape[0])
        exact = torch.ones(cands.shape[0], dtype=torch.bool)
        for m in self.models:
            for p in prompts:
                lv, ok = target_scores(m, p, cands, batch_size=self.eval_batch_size,
                                       use_prefix_cache=self.cfg.use_prefix_cache,
                                       prefix=self._prefix(m, p))
                total += lv
                exact &= ok
        self.target_forwards += cands.shape[0] * len(self.models) * len(prompts)
        return total / (len(self.models) * len(prompts)), exact

    def candidate_losses(self, prompts: Sequence[PromptIds], cands: torch.Tensor) -> torch.Tensor:
        """Mean target loss over every (model, prompt) for each candidate ``[B]``."""
        return self.candidate_scores(prompts, cands)[0]

    def _grad(self, prompts: Sequence[PromptIds], suffix: torch.Tensor) -> tuple[torch.Tensor, float]:
        grad, loss = None, 0.0
        for m in self.models:
            for p in prompts:
                g, lv = suffix_grad(m, p, suffix, prefix=self._prefix(m, p))
                g = g.float().cpu()
                grad = g if grad is None else grad + g
                loss += lv
        self.target_forwards += len(self.models) * len(prompts)
        return grad, loss / (len(self.models) * len(prompts))

    # -- one step ----------------------------------------------------------
    def select(self, prompts: Sequence[PromptIds], cands: torch.Tensor,
               generator: torch.Generator, draft_prompts=None
               ) -> tuple[int, float, float | None, bool]:
        """(index of the winner in ``cands``, its target loss, the agreement α or None, whether
        greedy decoding after the winner reproduces every target).

        The exact-match flag comes out of the same forward that scored the winner, so the early
        stop costs no extra target pass."""
        if not self.cfg.probe.enabled:
            losses, exact = self.candidate_scores(prompts, cands)
            i = int(losses.argmin())
            return i, float(losses[i]), None, bool(exact[i])
        from reasonlab.attacks.probe import draft_losses, probe_select

        d_model = self.draft[0]
        d_losses = draft_losses(self.draft, draft_prompts, self.tokenizer, cands,
                                batch_size=self.eval_batch_size,
                                use_prefix_cache=self.cfg.use_prefix_cache,
                                prefixes=[self._prefix(d_model, p) for p in draft_prompts],
                                same_tok=self.draft_same_tokenizer)
        self.draft_forwards += cands.shape[0] * len(draft_prompts)
        exact: dict[int, bool] = {}

        def score(idx: torch.Tensor) -> torch.Tensor:
            lv, ok = self.candidate_scores(prompts, cands[idx])
            exact.update((int(i), bool(o)) for i, o in zip(idx, ok))
            return lv

        res = probe_select(d_losses, score, sampling_factor=self.cfg.probe.sampling_factor,
                           r=self.cfg.probe.r, generator=generator)
        return res.winner, res.winner_loss, res.alpha, exact[res.winner]

    def run(self, messages: str | Sequence[str], targets: str | Sequence[str], *,
            on_step: Callable[[StepRecord], None] | None = None, progress: bool = False
            ) -> GCGResult:
        """Optimize one suffix for the (message, target) pairs; returns the best-so-far suffix."""
        cfg = self.cfg
        messages = [messages] if isinstance(messages, str) else list(messages)
        targets = [targets] if isinstance(targets, str) else list(targets)
        if len(messages) != len(targets) or not messages:
            raise ValueError("give one target per message (and at least one message)")
        prompts = [encode_prompt(self.tokenizer, m, t, chat=self.chat) for m, t in zip(messages, targets)]
        draft_prompts = None
        if cfg.probe.enabled:
            d_model, d_tok = self.draft
            draft_prompts = [encode_prompt(d_tok, m, t, chat=self.chat) for m, t in zip(messages, targets)]
        self._prefixes.clear()  # keyed by the prompts' ids, which live as long as this run
        gen = torch.Generator().manual_seed(cfg.seed)
        suffix = torch.tensor(self.tokenizer(cfg.optim_str_init, add_special_tokens=False)["input_ids"])
        buffer: list[tuple[float, torch.Tensor]] = []
        best_loss, best_ids = float("inf"), suffix.clone()
        steps: list[StepRecord] = []
        stopped = False
        t0 = time.perf_counter()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.num_steps, desc="gcg", leave=False)
        for step in range(cfg.num_steps):
            grad, _ = self._grad(prompts, suffix)
            cands = sample_candidates(suffix, grad, cfg.search_width, cfg.topk, cfg.n_replace,
                                      self.not_allowed, gen)
            if cfg.filter_ids:
                cands = filter_candidates(self.tokenizer, cands)
                if cands.shape[0] == 0:
                    log.warning("step %d: no candidate survives retokenization; drawing again", step)
                    continue
            i, loss, alpha, reproduces = self.select(prompts, cands, gen, draft_prompts)
            winner = cands[i]
            if loss < best_loss:
                best_loss, best_ids = loss, winner.clone()
            if cfg.buffer_size > 0:
                buffer.append((loss, winner.clone()))
                buffer.sort(key=lambda x: x[0])
                del buffer[cfg.buffer_size:]
                suffix = buffer[0][1].clone()
            else:
                suffix = winner.clone()
            rec = StepRecord(step, loss, best_loss, self.target_forwards, self.draft_forwards,
                             time.perf_counter() - t0, int(cands.shape[0]), alpha,
                             self.tokenizer.decode(winner.tolist()))
            steps.append(rec)
            if on_step is not None:
                on_step(rec)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", best=f"{best_loss:.3f}")
            if cfg.early_stop and reproduces:
                best_loss, best_ids = loss, winner.clone()  # the suffix that succeeds
                stopped = True
                break
        if bar is not None:
            bar.close()
        return GCGResult(self.tokenizer.decode(best_ids.tolist()), best_ids.tolist(), best_loss,
                         steps, stopped, self.target_forwards, self.draft_forwards,
                         time.perf_counter() - t0)
