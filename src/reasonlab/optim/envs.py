"""Inner training environments for the learned optimizer.

An :class:`Environment` is what meta-training and the comparison need from a task: a model for a
seed (e.g. a pretrained checkpoint plus a fresh head), a stream of training batches, the loss and
a test accuracy. :class:`DigitsEnv` is the embedded one: scikit-learn's 8×8 ``load_digits``; an
MLP is pretrained on one set of classes and fine-tuned on another. Its variants are the "unseen
data sets" and "unseen initializations" of the generalization table. A SkillMath fine-tuning
environment for the tiny Llama can be added by implementing the same protocol and registering a
builder in :data:`ENVIRONMENTS`.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from reasonlab.config import ConfigError, check_choice, check_range, from_dict

VARIANTS = ("none", "shift", "noise", "split")
VAL_SPLITS = ("fixed", "per_seed")
PRETRAIN_RECIPES = ("adam", "sgd_long")


@runtime_checkable
class Environment(Protocol):
    """A fine-tuning task an optimizer is meta-trained or evaluated on."""

    name: str

    def make_model(self, seed: int) -> nn.Module:
        """The model to fine-tune for ``seed`` (pretrained weights + seed-dependent parts)."""

    def batches(self, seed: int) -> Iterator[Any]:
        """An endless, seed-deterministic stream of training batches."""

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The scalar training loss on one batch."""

    def test_accuracy(self, model: nn.Module) -> float:
        """Accuracy (0..1) on the held-out test split."""

    def val_batches(self, seed: int) -> Iterator[Any]:
        """An endless, seed-deterministic stream of held-out batches (disjoint from the training
        and test data) for the validation meta-objective."""


@dataclass
class DigitsConfig:
    """Digits fine-tuning: pretrain an MLP on ``pretrain_classes``, fine-tune on ``classes``."""

    pretrain_classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    classes: list[int] = field(default_factory=lambda: [5, 6, 7, 8, 9])
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    pretrain_steps: int = 150
    pretrain_lr: float = 0.01
    pretrain_recipe: str = "adam"  # "sgd_long": 3x the steps of SGD+momentum (unseen checkpoints)
    batch_size: int = 64  # 0: full batch
    test_fraction: float = 0.5
    variant: str = "none"  # fine-tuning data: none | shift (1 px) | noise | split (evens→odds)
    noise_std: float = 0.15  # on pixels scaled to [0, 1]
    split_seed: int = 0  # the fixed train/test split of the fine-tuning classes
    val_fraction: float = 0.0  # of the training split held out for the validation objective
    # "fixed": one train/validation partition (split_seed); "per_seed": each inner run's seed
    # draws its own, so a validation meta-objective cannot fit one small held-out set
    val_split: str = "fixed"

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, VARIANTS)
        check_choice("pretrain_recipe", self.pretrain_recipe, PRETRAIN_RECIPES)
        check_choice("val_split", self.val_split, VAL_SPLITS)
        for c in [*self.pretrain_classes, *self.classes]:
            check_range("classes", c, 0, 9)
        if len(self.classes) < 2:
            raise ConfigError("config key 'classes' needs at least 2 classes")
        if not self.hidden:
            raise ConfigError("config key 'hidden' needs at least one hidden layer")
        for h in self.hidden:
            check_range("hidden", h, 1)
        check_range("pretrain_steps", self.pretrain_steps, 0)
        check_range("pretrain_lr", self.pretrain_lr, 0.0, None, lo_open=True)
        check_range("batch_size", self.batch_size, 0)
        check_range("test_fraction", self.test_fraction, 0.05, 0.95)
        check_range("noise_std", self.noise_std, 0.0)
        check_range("val_fraction", self.val_fraction, 0.0, 0.8)

    def resolved(self) -> "DigitsConfig":
        """The ``split`` variant: pretrain on even digits, fine-tune on odd ones."""
        if self.variant == "split":
            return DigitsConfig(**{**self.__dict__, "pretrain_classes": [0, 2, 4, 6, 8],
                                   "classes": [1, 3, 5, 7, 9], "variant": "none"})
        return self


class MLP(nn.Module):
    """A tanh MLP body plus a linear head: 2·(len(hidden)+1) parameter tensors."""

    def __init__(self, d_in: int, hidden: list[int], n_out: int):
        super().__init__()
        layers: list[nn.Module] = []
        d = d_in
        for h in hidden:
            layers += [nn.Linear(d, h), nn.Tanh()]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside (results then do not depend on the machine's cores)."""
    from reasonlab.device import torch_threads

    with torch_threads(1):
        yield


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def _shift(x: np.ndarray) -> np.ndarray:
    """Shift each 8×8 image one pixel right and one down (zero fill)."""
    img = x.reshape(-1, 8, 8)
    out = np.zeros_like(img)
    out[:, 1:, 1:] = img[:, :-1, :-1]
    return out.reshape(-1, 64)


class DigitsEnv:
    """Fine-tune a pretrained digits MLP on new classes (see :class:`DigitsConfig`)."""

    def __init__(self, config: DigitsConfig | None = None):
        self.config = (config or DigitsConfig())
        cfg = self.config.resolved()
        self.name = f"digits[{self.config.variant},{cfg.pretrain_recipe}]"
        x, y = _digits()
        pre = np.isin(y, cfg.pretrain_classes)
        self.x_pre = torch.from_numpy(x[pre])
        self.y_pre = torch.from_numpy(np.searchsorted(sorted(cfg.pretrain_classes), y[pre]))
        fine = np.isin(y, cfg.classes)
        xf, yf = x[fine], np.searchsorted(sorted(cfg.classes), y[fine])
        if cfg.variant == "shift":
            xf = _shift(xf)
        elif cfg.variant == "noise":
            rng = np.random.default_rng(12345)
            xf = np.clip(xf + rng.normal(0, cfg.noise_std, xf.shape), 0, 1).astype(np.float32)
        perm = np.random.default_rng(cfg.split_seed).permutation(len(yf))
        n_test = int(round(len(yf) * cfg.test_fraction))
        te, tr = perm[:n_test], perm[n_test:]
        self.n_val = int(round(len(tr) * cfg.val_fraction))
        va, tr = tr[:self.n_val], tr[self.n_val:]
        self.x_val, self.y_val = torch.from_numpy(xf[va]), torch.from_numpy(yf[va])
        self.x_train, self.y_train = torch.from_numpy(xf[tr]), torch.from_numpy(yf[tr])
        self._pool_x = torch.cat([self.x_val, self.x_train])  # the training split, before the
        self._pool_y = torch.cat([self.y_val, self.y_train])  # validation partition
        self.x_test, self.y_test = torch.from_numpy(xf[te]), torch.from_numpy(yf[te])
        self.n_pre, self.n_out = len(cfg.pretrain_classes), len(cfg.classes)
        self._cfg = cfg

    @functools.lru_cache(maxsize=64)
    def _pretrained_body(self, seed: int) -> dict[str, torch.Tensor]:
        with one_thread():
            return self._pretrain(seed)

    def _pretrain(self, seed: int) -> dict[str, torch.Tensor]:
        cfg = self._cfg
        g = torch.Generator().manual_seed(1_000_003 * seed + 17)
        with torch.random.fork_rng():
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
            model = MLP(64, cfg.hidden, self.n_pre)
        if cfg.pretrain_recipe == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=cfg.pretrain_lr)
            steps = cfg.pretrain_steps
        else:
            opt = torch.optim.SGD(model.parameters(), lr=10 * cfg.pretrain_lr, momentum=0.9)
            steps = 3 * cfg.pretrain_steps
        lossf = nn.CrossEntropyLoss()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            lossf(model(self.x_pre), self.y_pre).backward()
            opt.step()
        return {k: v.detach().clone() for k, v in model.body.state_dict().items()}

    def make_model(self, seed: int) -> nn.Module:
        model = MLP(64, self._cfg.hidden, self.n_out)
        model.body.load_state_dict(self._pretrained_body(seed))
        g = torch.Generator().manual_seed(7919 * seed + 3)
        bound = 1.0 / np.sqrt(model.head.in_features)
        with torch.no_grad():
            model.head.weight.uniform_(-bound, bound, generator=g)
            model.head.bias.uniform_(-bound, bound, generator=g)
        return model

    def split(self, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_train, y_train, x_val, y_val)`` of the inner run ``seed``: the fixed partition,
        or with ``val_split: per_seed`` one drawn from the seed (the test split never moves)."""
        if self._cfg.val_split == "fixed" or self.n_val == 0:
            return self.x_train, self.y_train, self.x_val, self.y_val
        g = torch.Generator().manual_seed(32_452_843 * seed + 7)
        perm = torch.randperm(len(self._pool_y), generator=g)
        va, tr = perm[:self.n_val], perm[self.n_val:]
        return self._pool_x[tr], self._pool_y[tr], self._pool_x[va], self._pool_y[va]

    def batches(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y, _, _ = self.split(seed)
        return _stream(x, y, self._cfg.batch_size, 104_729 * seed + 11)

    def val_batches(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of the held-out validation split (``val_fraction`` of the training split)."""
        if self.n_val == 0:
            raise ValueError(f"{self.name} has no validation split: a validation objective "
                             "needs env.options.val_fraction > 0")
        _, _, x, y = self.split(seed)
        return _stream(x, y, self._cfg.batch_size, 15_485_863 * seed + 29)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    @torch.no_grad()
    def test_accuracy(self, model: nn.Module) -> float:
        return float((model(self.x_test).argmax(-1) == self.y_test).float().mean())


def _stream(x: torch.Tensor, y: torch.Tensor, bs: int, seed: int
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches of (x, y) (the whole set when ``bs`` is 0 or too large)."""
    n = len(y)
    if bs == 0 or bs >= n:
        while True:
            yield x, y
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - bs + 1, bs):
            idx = perm[i:i + bs]
            yield x[idx], y[idx]


# Environments by name: (config dataclass, builder). A SkillMath/tiny-Llama fine-tuning
# environment registers here with its own config class.
def _lm_env(config: Any) -> Environment:
    from reasonlab.optim.lm_env import LMEnv

    return LMEnv(config)


ENVIRONMENTS: dict[str, tuple[Any, Callable[[Any], Environment]]] = {
    "digits": (DigitsConfig, DigitsEnv),
    "lm": (None, _lm_env),  # the config class is resolved on first use (lm_env imports more)
}


@dataclass
class EnvSpec:
    """A picklable recipe for an environment: a registered name and its config options
    (validated at once against the environment's config class)."""

    name: str = "digits"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("env.name", self.name, ENVIRONMENTS)
        self.config()

    def config(self) -> Any:
        cls = ENVIRONMENTS[self.name][0]
        if cls is None and self.name == "lm":
            from reasonlab.optim.lm_env import LMEnvConfig as cls
        return from_dict(cls, dict(self.options), prefix="env.options.")

    def with_options(self, **kw: Any) -> "EnvSpec":
        return EnvSpec(self.name, {**self.options, **kw})

    def key(self) -> str:
        return repr((self.name, sorted(self.options.items())))


_ENV_CACHE: dict[str, Environment] = {}


def make_env(spec: EnvSpec) -> Environment:
    """Build (once per process) the environment for ``spec``."""
    k = spec.key()
    if k not in _ENV_CACHE:
        _ENV_CACHE[k] = ENVIRONMENTS[spec.name][1](spec.config())
    return _ENV_CACHE[k]
