"""Named model recipes: a config dataclass instance plus a function that builds the model.

A recipe is what the model cache (:mod:`reasonlab.models.cache`) builds on first use::

    from reasonlab.models.recipes import Recipe, register

    register(Recipe(name="my-model", config=MyConfig(...), build=build_my_model,
                    micro_config=MyConfig(steps=5), description="what it is"))

``build(cfg, out_dir)`` must write a Hugging Face model folder (``config.json``, safetensors
weights, the tokenizer) into ``out_dir`` and nothing outside it; the cache gives it a fresh,
private folder and publishes it only when ``build`` returns. ``micro_config`` is the same recipe
scaled down to build in seconds (tests). The cache key is :func:`config_hash`: the recipe name,
its ``version`` and the config's values, so changing a config value builds a new entry; bump
``version`` when the build function changes what it makes from the same config.

Recipes defined in this package are registered by importing the modules in
:data:`RECIPE_MODULES` (done lazily, on the first lookup). A module elsewhere adds its recipes by
calling :func:`register` at import time and its module name to :data:`RECIPE_MODULES`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# Modules whose import registers recipes; imported on the first lookup.
RECIPE_MODULES = [
    "reasonlab.models.solvers",
    "reasonlab.models.aligned_chat",
    "reasonlab.models.herd",
    "reasonlab.models.guard",
]


@dataclass(frozen=True)
class Recipe:
    """A named way to build a model: ``build(config, out_dir)`` writes an HF model folder."""

    name: str
    config: Any
    build: Callable[[Any, Path], None]
    micro_config: Any = None
    description: str = ""
    version: int = 1

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\: \t\n") or self.name.startswith("."):
            raise ValueError(f"recipe name {self.name!r} must be non-empty, without '/', '\\', ':', "
                             "spaces or a leading dot")
        if not callable(self.build):
            raise ValueError(f"recipe {self.name!r}: build must be callable")

    def config_for(self, micro: bool = False) -> Any:
        """The config to build: the micro one (tests) or the full one."""
        if micro:
            if self.micro_config is None:
                raise ValueError(f"recipe {self.name!r} has no micro variant")
            return self.micro_config
        return self.config


_REGISTRY: dict[str, Recipe] = {}
_loaded = False


def register(recipe: Recipe, *, replace: bool = False) -> Recipe:
    """Add ``recipe`` to the registry; a second recipe under a taken name is an error unless
    ``replace`` (the same object again is fine, so re-imports are harmless)."""
    old = _REGISTRY.get(recipe.name)
    if old is not None and old is not recipe and not replace:
        if old.build is recipe.build and config_hash(old) == config_hash(recipe):
            return old  # the same recipe defined again (a module imported twice)
        raise ValueError(f"a recipe named {recipe.name!r} is already registered")
    _REGISTRY[recipe.name] = recipe
    return recipe


def unregister(name: str) -> None:
    """Remove a recipe (tests)."""
    _REGISTRY.pop(name, None)


def _load_modules() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in RECIPE_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:  # the module exists but something it needs does not
                raise


def recipe_names() -> list[str]:
    """The registered recipe names, sorted."""
    _load_modules()
    return sorted(_REGISTRY)


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; an unknown name raises KeyError listing the known ones."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    _load_modules()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model recipe {name!r}; known recipes: "
                       f"{', '.join(sorted(_REGISTRY)) or '(none)'}")
    return _REGISTRY[name]


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__name__, **{f.name: _plain(getattr(obj, f.name))
                                                   for f in dataclasses.fields(obj)}}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _diff(obj: Any) -> Any:
    """``obj`` as plain data with every dataclass field that holds its default left out (as
    transformers' ``to_diff_dict``): a field added to a config class later, with a default,
    leaves the key of every recipe that does not set it unchanged."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {"__type__": type(obj).__name__}
        for f in dataclasses.fields(obj):
            v, d = getattr(obj, f.name), _field_default(f)
            if d is dataclasses.MISSING or _plain(v) != _plain(d):
                out[f.name] = _diff(v)
        return out
    if isinstance(obj, dict):
        return {str(k): _diff(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_diff(v) for v in obj]
    return _plain(obj)


def config_json(config: Any) -> str:
    """The canonical JSON of a config (sorted keys), every value recorded."""
    return json.dumps(_plain(config), sort_keys=True, separators=(",", ":"), default=str)


def config_key_json(config: Any) -> str:
    """The canonical JSON of the values that differ from their defaults: the input of
    :func:`config_hash`."""
    return json.dumps(_diff(config), sort_keys=True, separators=(",", ":"), default=str)


def config_hash(recipe: Recipe, micro: bool = False) -> str:
    """SHA-256 (hex) of the recipe's name, version, variant and the config values that differ
    from their defaults (bump ``version`` when a default that a recipe relies on changes)."""
    cfg = recipe.config_for(micro)
    key = f"{recipe.name}\n{recipe.version}\n{'micro' if micro else 'full'}\n{config_key_json(cfg)}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
