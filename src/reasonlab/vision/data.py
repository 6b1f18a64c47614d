"""Visual SkillMath: SkillMath problems whose first operand is shown as an image.

"What is 26 + 71?" becomes "What is <|image|> + 71?" with a picture of the handwritten number 26
(two 8x8 digits from scikit-learn's ``load_digits`` side by side on a square canvas). The
solution and the answer are the SkillMath ones, so answers are checked with
:func:`reasonlab.data.answers.check_answer` as for text problems, and the same problem given as
text is the ceiling a frozen text solver reaches. Splits and seeds are SkillMath's
(:func:`reasonlab.data.skillmath.generate`); the handwriting is split too: training problems draw
digit images from one part of ``load_digits``, held-out problems from the other (every fifth
image), so held-out accuracy also measures reading unseen handwriting.

Llama 3 paper, arXiv:2407.21783, §7 (image data, here a synthetic stand-in).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from reasonlab.data.problem import Problem
from reasonlab.data.skillmath import format_prompt

IMAGE_TOKEN = "<|image|>"
DIGIT_SIZE = 8
HELDOUT_EVERY = 5  # load_digits images i % 5 == 0 are held out (test, val); the rest train


@dataclass
class VisualProblem:
    """A SkillMath problem with its first operand replaced by an image."""

    problem: Problem
    question: str  # the question with IMAGE_TOKEN in place of ``number``
    number: int
    image: np.ndarray  # (size, size) float32 in [0, 1]

    @property
    def prompt(self) -> str:
        return format_prompt(self.question)

    @property
    def text_prompt(self) -> str:
        """The same problem given as text (what the frozen solver sees: the ceiling)."""
        return format_prompt(self.problem.question)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def digit_pool(heldout: bool) -> dict[int, np.ndarray]:
    """Digit images by class: the held-out part (every fifth image) or the training part."""
    images, target = _digits()
    keep = (np.arange(len(target)) % HELDOUT_EVERY == 0) == heldout
    return {c: images[keep & (target == c)] for c in range(10)}


def render_number(n: int, rng: random.Random, pool: dict[int, np.ndarray], size: int = 16,
                  jitter: bool = True) -> np.ndarray:
    """Draw ``n`` (0..99) as one or two handwritten digits, right-aligned, on a ``size`` canvas.

    The digits sit side by side (the units digit in the right half); ``jitter`` shifts the row
    at random, so the encoder has to read the digits rather than fixed pixel positions."""
    if not 0 <= n <= 99:
        raise ValueError(f"render_number draws 0..99, got {n}")
    if size < 2 * DIGIT_SIZE:
        raise ValueError(f"image size {size} is below {2 * DIGIT_SIZE} (two 8x8 digits)")
    canvas = np.zeros((size, size), np.float32)
    top = rng.randint(0, size - DIGIT_SIZE) if jitter else (size - DIGIT_SIZE) // 2
    left = size - 2 * DIGIT_SIZE
    digits = [n // 10, n % 10] if n >= 10 else [None, n]
    for i, d in enumerate(digits):
        if d is None:
            continue
        img = pool[d][rng.randrange(len(pool[d]))]
        x = left + i * DIGIT_SIZE
        canvas[top:top + DIGIT_SIZE, x:x + DIGIT_SIZE] = img
    return canvas


def to_pixels(images: list[np.ndarray]):
    """Canvases → Mllama ``pixel_values`` (B, 1 image, 1 tile, 3, H, W) normalised to [-1, 1],
    with ``aspect_ratio_ids`` (B, 1) = 1 (the 1x1 tile layout) and ``aspect_ratio_mask`` (B, 1, 1)."""
    import torch

    x = torch.from_numpy(np.stack(images)).float() * 2 - 1
    pix = x[:, None, None, None].expand(-1, 1, 1, 3, -1, -1).contiguous()
    b = len(images)
    return pix, torch.ones(b, 1, dtype=torch.long), torch.ones(b, 1, 1, dtype=torch.long)


def visualize(problem: Problem, rng: random.Random, pool: dict[int, np.ndarray],
              size: int = 16) -> VisualProblem | None:
    """The visual form of ``problem`` (its first step's first operand as an image), or None
    when that operand is not written as a number 0..99 in the question."""
    steps = problem.meta.get("steps") or []
    if not steps:
        return None
    x = steps[0]["args"].get("x")
    if not isinstance(x, int) or not 0 <= x <= 99:
        return None
    m = re.search(rf"(?<!\d){x}(?!\d)", problem.question)
    if m is None:
        return None
    q = problem.question[:m.start()] + IMAGE_TOKEN + problem.question[m.end():]
    return VisualProblem(problem, q, x, render_number(x, rng, pool, size))


def visual_split(problems: list[Problem], *, heldout: bool, seed: int | str,
                 size: int = 16) -> list[VisualProblem]:
    """Visual forms of ``problems`` (deterministic in ``seed``), handwriting from the training
    part of ``load_digits`` or from the held-out part."""
    rng = random.Random(f"visual:{seed}")
    pool = digit_pool(heldout)
    out = [visualize(p, rng, pool, size) for p in problems]
    return [v for v in out if v is not None]
