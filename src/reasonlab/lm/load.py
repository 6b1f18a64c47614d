"""``load_lm(spec)``: one string names a model, wherever it lives.

- ``http://host:port/v1#name`` (or ``https://``): an :class:`~reasonlab.lm.http.HTTPLM` on that
  OpenAI-compatible endpoint serving ``name`` (without ``#name``: the first model it lists);
- a folder holding a HF model: a :class:`~reasonlab.lm.local.LocalLM`;
- anything else is offered to the resolvers registered with :func:`register_resolver` (the
  model cache registers its recipe names there, so this core module imports no method package).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from reasonlab.lm.base import LanguageModel

Resolver = Callable[[str], "str | Path | None"]
_RESOLVERS: list[Resolver] = []


def register_resolver(fn: Resolver) -> None:
    """Add ``fn(spec) -> model folder or None`` for specs that are neither URLs nor folders."""
    if fn not in _RESOLVERS:
        _RESOLVERS.append(fn)


def is_http_spec(spec: str) -> bool:
    return str(spec).startswith(("http://", "https://"))


def parse_http_spec(spec: str) -> tuple[str, str]:
    """``http://host:port/v1#name`` -> (base URL, model name or "")."""
    base, _, name = str(spec).partition("#")
    return base.rstrip("/"), name


def resolve_folder(spec: str | Path) -> Path:
    """The model folder a non-URL spec names; FileNotFoundError naming the spec otherwise."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return p
    for fn in _RESOLVERS:
        found = fn(str(spec))
        if found is not None:
            return Path(found)
    raise FileNotFoundError(f"model '{spec}' is not a model folder, an http(s) URL like "
                            "http://127.0.0.1:8000/v1#name, or a known model name "
                            "(`reasonlab models list` shows the model-cache recipes)")


def load_lm(spec: str | Path, *, device: str | None = "cpu", batch_size: int = 16,
            **http_options: Any) -> LanguageModel:
    """The :class:`LanguageModel` named by ``spec``. ``device`` and ``batch_size`` apply to a
    local model; ``http_options`` are :class:`~reasonlab.lm.http.HTTPConfig` keys (``api_key``,
    ``cache``, ``max_concurrency``, ...) for an endpoint."""
    spec = str(spec)
    if not spec:
        raise ValueError("no model given: name a model folder or an http(s) URL")
    if is_http_spec(spec):
        from reasonlab.lm.http import HTTPConfig, HTTPLM

        base, name = parse_http_spec(spec)
        return HTTPLM(HTTPConfig(base_url=base, model=name, **http_options))
    from reasonlab.lm.local import LocalLM

    return LocalLM.from_pretrained(resolve_folder(spec), device=device, batch_size=batch_size)
