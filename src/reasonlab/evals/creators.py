"""Synthetic creators with known distributions, for measuring statistical creativity.

Statistical creativity (Wang et al., "Can AI Be as Creative as Humans?", arXiv:2401.01623, §3–§4)
asks whether a model ``q(·|I[c])`` creates like a creator ``c``, where ``I[c]`` is what the model
can see of the creator. To measure it exactly we need creators whose distribution ``p(·|c)`` is
known; the paper has no public code, so this world is ours.

Each creator is a small stochastic grammar:

* **theme** (sea, forest, city, sky) gives the nouns and verbs it may use,
* **mood** (dark, bright, wild) gives the adjectives,
* **form** (terse, plain, ornate) gives the line templates (``N V``, ``the A N V``, ...) with
  their probabilities and the distribution of the number of lines (1–3),
* a **favorite noun**, weighted up, and creator-specific word weights drawn from a Dirichlet
  (an idiosyncrasy that the biography does not reveal).

A work is 1–3 lines ``"cold tide drifts."`` joined by spaces. Every string has one derivation
(templates of a form differ in length, word classes are disjoint), so ``log p(x|c)`` is exact, and
so is the entropy ``H(p(·|c)) = H(L) + E[L]·H(line)``. The biography ``I[c]`` names the theme,
mood, form and favorite noun (``"dark sea terse, loves tide"``); the idiosyncratic weights stay
hidden, so even a perfect conditional model of unseen creators keeps a small KL.

:class:`CreatorModel` (``q = p`` given the biography) and :class:`MixtureModel` (the marginal
over a set of creators, ignoring the condition) are exact :class:`~reasonlab.lm.base.LanguageModel`
references for the evaluators.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Sequence

from reasonlab.lm.base import Generation, LanguageModel, Message, ScoredContinuation

THEMES: dict[str, dict[str, tuple[str, ...]]] = {
    "sea": {"N": ("tide", "wave", "shore", "salt", "gull", "reef"),
            "V": ("drifts", "breaks", "roars", "sinks")},
    "forest": {"N": ("oak", "moss", "fern", "owl", "pine", "root"),
               "V": ("grows", "sways", "hides", "waits")},
    "city": {"N": ("street", "lamp", "train", "brick", "tower", "crowd"),
             "V": ("hums", "glows", "rushes", "leans")},
    "sky": {"N": ("star", "moon", "cloud", "wind", "storm", "dawn"),
            "V": ("shines", "fades", "burns", "falls")},
}
MOODS: dict[str, tuple[str, ...]] = {
    "dark": ("cold", "grim", "dim", "lost"),
    "bright": ("warm", "gold", "glad", "soft"),
    "wild": ("fierce", "loud", "swift", "raw"),
}
# form -> (templates, template probabilities, probabilities of 1, 2, 3 lines). Within a form the
# templates differ in length, so a line parses one way.
FORMS: dict[str, tuple[tuple[tuple[str, ...], ...], tuple[float, ...], tuple[float, ...]]] = {
    "terse": ((("N", "V"), ("A", "N", "V")), (0.6, 0.4), (0.5, 0.4, 0.1)),
    "plain": ((("the", "N", "V"), ("the", "A", "N", "V")), (0.5, 0.5), (0.3, 0.5, 0.2)),
    "ornate": ((("A", "A", "N", "V"), ("the", "A", "N", "V", "A")), (0.5, 0.5), (0.2, 0.4, 0.4)),
}
SLOTS = ("A", "N", "V")


def _entropy(probs: Sequence[float]) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0)


@dataclass
class Creator:
    """One creator: its attributes, its word weights per slot, and the grammar they define."""

    name: str
    theme: str
    mood: str
    form: str
    favorite: str
    weights: dict[str, dict[str, float]] = field(default_factory=dict)  # slot -> word -> prob

    @property
    def bio(self) -> str:
        """``I[c]``: what a model is shown of the creator."""
        return f"{self.mood} {self.theme} {self.form}, loves {self.favorite}"

    @property
    def templates(self) -> tuple[tuple[str, ...], ...]:
        return FORMS[self.form][0]

    @property
    def template_probs(self) -> tuple[float, ...]:
        return FORMS[self.form][1]

    @property
    def line_probs(self) -> tuple[float, ...]:
        return FORMS[self.form][2]

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> str:
        """One work ``x ~ p(·|c)``."""
        n_lines = rng.choices(range(1, len(self.line_probs) + 1), self.line_probs)[0]
        lines = []
        for _ in range(n_lines):
            template = rng.choices(self.templates, self.template_probs)[0]
            words = []
            for item in template:
                if item in SLOTS:
                    vocab = self.weights[item]
                    words.append(rng.choices(list(vocab), list(vocab.values()))[0])
                else:
                    words.append(item)
            lines.append(" ".join(words) + ".")
        return " ".join(lines)

    def sample_many(self, k: int, rng: random.Random) -> list[str]:
        return [self.sample(rng) for _ in range(k)]

    # -- exact probabilities ---------------------------------------------------------------------
    def logprob(self, text: str) -> float:
        """``log p(text|c)``, exact; ``-inf`` for a string the creator cannot write."""
        if not text.endswith(".") or "  " in text:
            return -math.inf
        lines = text[:-1].split(". ")
        if not 1 <= len(lines) <= len(self.line_probs):
            return -math.inf
        total = math.log(self.line_probs[len(lines) - 1])
        by_len = {len(t): (t, p) for t, p in zip(self.templates, self.template_probs)}
        for line in lines:
            words = line.split(" ")
            if len(words) not in by_len:
                return -math.inf
            template, p_t = by_len[len(words)]
            total += math.log(p_t)
            for item, word in zip(template, words):
                if item in SLOTS:
                    p_w = self.weights[item].get(word, 0.0)
                    if p_w <= 0:
                        return -math.inf
                    total += math.log(p_w)
                elif word != item:
                    return -math.inf
        return total

    def line_entropy(self) -> float:
        """Entropy (nats) of one line: the template choice plus its slot words."""
        h = _entropy(self.template_probs)
        for template, p_t in zip(self.templates, self.template_probs):
            h += p_t * sum(_entropy(list(self.weights[s].values())) for s in template if s in SLOTS)
        return h

    def entropy(self) -> float:
        """``H(p(·|c))`` in nats per work, exact: ``H(L) + E[L]·H(line)``."""
        mean_lines = sum((i + 1) * p for i, p in enumerate(self.line_probs))
        return _entropy(self.line_probs) + mean_lines * self.line_entropy()

    def to_dict(self) -> dict:
        return {"name": self.name, "theme": self.theme, "mood": self.mood, "form": self.form,
                "favorite": self.favorite, "bio": self.bio, "weights": self.weights}


def sample_creator(rng: random.Random, name: str, *, alpha: float = 3.0,
                   favorite_boost: float = 4.0) -> Creator:
    """``c ~ D_C``: uniform theme, mood, form and favorite noun; Dirichlet(``alpha``) word
    weights per slot, the favorite's weight multiplied by ``favorite_boost`` (then renormalized)."""
    if alpha <= 0 or favorite_boost < 1:
        raise ValueError(f"alpha must be > 0 and favorite_boost >= 1, got {alpha}, {favorite_boost}")
    theme = rng.choice(sorted(THEMES))
    mood = rng.choice(sorted(MOODS))
    form = rng.choice(sorted(FORMS))
    favorite = rng.choice(THEMES[theme]["N"])
    vocab = {"A": MOODS[mood], "N": THEMES[theme]["N"], "V": THEMES[theme]["V"]}
    weights: dict[str, dict[str, float]] = {}
    for slot, words in vocab.items():
        raw = [rng.gammavariate(alpha, 1.0) for _ in words]
        if slot == "N":
            raw = [r * (favorite_boost if w == favorite else 1.0) for r, w in zip(raw, words)]
        z = sum(raw)
        weights[slot] = {w: r / z for w, r in zip(words, raw)}
    return Creator(name, theme, mood, form, favorite, weights)


def sample_creators(n: int, seed: int, *, prefix: str = "c", alpha: float = 3.0,
                    favorite_boost: float = 4.0) -> list[Creator]:
    """``n`` creators drawn i.i.d. from ``D_C`` with a seeded generator."""
    if n < 1:
        raise ValueError(f"the number of creators must be >= 1, got {n}")
    rng = random.Random(seed)
    return [sample_creator(rng, f"{prefix}{i}", alpha=alpha, favorite_boost=favorite_boost)
            for i in range(n)]


def condition_prompt(creator: Creator) -> str:
    """The prompt a conditional model sees: the biography and a newline."""
    return creator.bio + "\n"


# -- exact reference models ----------------------------------------------------------------------
class _ExactModel(LanguageModel):
    """A :class:`LanguageModel` whose distribution over works is known exactly.

    ``end`` is the end-of-work string a continuation may carry (``score`` strips it), so the same
    evaluator call works for these and for a tokenizer-based model scored with its EOS text.
    """

    def __init__(self, end: str = ""):
        self.end = end

    def _dist(self, prompt: str) -> list[tuple[float, Creator]]:
        raise NotImplementedError

    def _strip(self, text: str) -> str:
        return text[: -len(self.end)] if self.end and text.endswith(self.end) else text

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 128,
                 temperature: float = 1.0, top_p: float = 1.0,
                 stop: Sequence[str] | None = None, seed: int | None = None) -> list[Generation]:
        if temperature != 1.0 or top_p != 1.0:
            raise ValueError("an exact creator model samples at temperature 1, top_p 1 only")
        rng = random.Random(seed)
        out = []
        for p in prompts:
            mix = self._dist(p)
            creator = rng.choices([c for _, c in mix], [w for w, _ in mix])[0]
            text = creator.sample(rng)
            out.append(Generation(text, [], [self._logprob(p, text)], "stop"))
        return out

    def _logprob(self, prompt: str, text: str) -> float:
        terms = [math.log(w) + c.logprob(text) for w, c in self._dist(prompt) if w > 0]
        m = max(terms)
        if m == -math.inf:
            return -math.inf
        return m + math.log(sum(math.exp(t - m) for t in terms))

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[ScoredContinuation]:
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        return [ScoredContinuation([0], [self._logprob(p, self._strip(c))], [True])
                for p, c in zip(prompts, continuations)]

    def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return "".join(m["content"] for m in messages)


class CreatorModel(_ExactModel):
    """``q(·|I[c]) = p(·|c)``: reads the biography in the prompt and writes as that creator."""

    def __init__(self, creators: Sequence[Creator], end: str = ""):
        super().__init__(end)
        self.by_prompt = {condition_prompt(c): c for c in creators}

    def _dist(self, prompt: str) -> list[tuple[float, Creator]]:
        if prompt not in self.by_prompt:
            raise ValueError(f"CreatorModel: no creator has the biography {prompt!r}")
        return [(1.0, self.by_prompt[prompt])]


class MixtureModel(_ExactModel):
    """``q(x) = (1/n) Σ_c p(x|c)``: the marginal over ``creators``, blind to the condition."""

    def __init__(self, creators: Sequence[Creator], end: str = ""):
        super().__init__(end)
        self.mix = [(1.0 / len(creators), c) for c in creators]

    def _dist(self, prompt: str) -> list[tuple[float, Creator]]:
        return self.mix
