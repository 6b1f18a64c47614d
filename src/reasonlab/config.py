"""Dataclass configs loaded from YAML with ``key=value`` overrides, validated at load.

Every runner has a dataclass config. :func:`load_config` builds it from an optional YAML file and
``--set key=value`` overrides (nested keys with dots), and fails at once with a message that
names the unknown key (and the known ones) or the value out of range.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, key or value is invalid; the message names which and why."""


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None,
                *, lo_open: bool = False) -> None:
    """Raise :class:`ConfigError` if ``value`` is outside ``[lo, hi]`` (``(lo, hi]`` if lo_open) or
    is not a finite number (NaN compares false with every bound, so it is named here)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{name}' = {value!r} is not a finite number")
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and value > hi
    if too_low or too_high:
        left = "(" if lo_open else "["
        lo_s = "-inf" if lo is None else repr(lo)
        hi_s = "inf" if hi is None else repr(hi)
        raise ConfigError(f"config key '{name}' = {value!r} is out of range {left}{lo_s}, {hi_s}]")


def check_order(low_name: str, low: float, high_name: str, high: float, *,
                strict: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``low <= high`` (``<`` if ``strict``): a rule between two
    keys (``warmup_steps`` <= ``max_steps``), refused naming both keys and both values."""
    if low > high or (strict and low == high):
        op = "<" if strict else "<="
        raise ConfigError(f"config key '{low_name}' = {low!r} and config key '{high_name}' = "
                          f"{high!r} conflict: {low_name} must be {op} {high_name}")


def check_choice(name: str, value: Any, allowed: typing.Iterable[Any]) -> None:
    """Raise :class:`ConfigError` if ``value`` is not one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"config key '{name}' = {value!r} is not one of {allowed}")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"config key '{name}': bad value {value!r}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{name}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{name}.")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{name}' must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(f"{name}[{i}]", v, inner) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{name}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config key '{name}' must be true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"config key '{name}' must be an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"config key '{name}' must be an integer, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ConfigError(f"config key '{name}' must be an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{name}' must be a number, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{name}' must be a number, got {value!r}") from None
        if not math.isfinite(f):
            raise ConfigError(f"config key '{name}' = {value!r} is not a finite number")
        return f
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"config key '{name}' must be a string, got {value!r}")
        return str(value)
    if typing.get_origin(tp) is typing.Literal:
        check_choice(name, value, typing.get_args(tp))
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' for {cls.__name__}; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(prefix + k, _onto_default(fields[k], v), hints[k]) for k, v in data.items()}
    if not prefix:
        return cls(**kwargs)
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a nested section's own checks name its keys without the section
        raise ConfigError(_prefixed(str(e), prefix, set(fields))) from None


def _onto_default(f: dataclasses.Field, value: Any) -> Any:
    """A partial mapping for a nested section, laid over that field's own default (not the
    section class's defaults): ``--set dpo.beta=0.2`` keeps the other values the parent chose."""
    if not isinstance(value, dict):
        return value
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    elif f.default is not dataclasses.MISSING:
        default = f.default
    else:
        return value
    if not dataclasses.is_dataclass(default) or isinstance(default, type):
        return value
    return _merge(dataclasses.asdict(default), value)


def _prefixed(message: str, prefix: str, names: set[str]) -> str:
    """``message`` with each ``config key 'name'`` of a field in ``names`` written as
    ``config key 'prefix.name'`` (the key a user sets for a nested section)."""
    import re

    def sub(m: re.Match) -> str:
        name = m.group(2)
        base = re.split(r"[\[.]", name, maxsplit=1)[0]
        return f"{m.group(1)}'{prefix}{name}'" if base in names else m.group(0)

    return re.sub(r"(config keys? )'([A-Za-z_][\w.\[\]]*)'", sub, message)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass config."""
    return dataclasses.asdict(cfg)


def _set_nested(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"config key '{dotted}': '{k}' is not a mapping")
    d[keys[-1]] = value


def parse_overrides(overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings (values as YAML scalars) into a nested dict."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_nested(out, key, value)
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file raises ConfigError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"malformed YAML in {p}{where}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: typing.Iterable[str] = (), base: dict[str, Any] | None = None) -> T:
    """Build config ``cls`` from ``base`` dict, then a YAML file, then ``key=value`` overrides."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = _merge(data, read_yaml(path))
    data = _merge(data, parse_overrides(overrides))
    return from_dict(cls, data)
