"""The model cache: named recipes built on first use, locked, published atomically, verified.

Like the Hugging Face hub cache, but for models trained here (DESIGN.md, ``models/``).
:func:`model_path` returns the HF model folder of a recipe (:mod:`reasonlab.models.recipes`),
building it the first time. The layout under the cache root::

    {root}/models/{name}-{hash16}/          one published entry (micro: {name}-micro-{hash16})
        model/                              the HF folder (config.json, safetensors, tokenizer)
        manifest.json                       recipe, config, hash, every file's size and SHA-256
    {root}/models/.locks/{entry}.lock       fcntl lock held while an entry is checked or built
    {root}/models/.tmp-{entry}-{pid}-...    a build in progress (never read; removed if stale)

The root is ``$REASONLAB_CACHE`` when set, else ``$XDG_CACHE_HOME/reasonlab`` (default
``~/.cache/reasonlab``). Safety, as in the hub cache:

- one builder: an exclusive ``fcntl.flock`` per entry, so parallel test workers or benchmarks
  wait for the first builder and then load its model instead of building it again;
- atomic publish: a build writes into a private temporary folder that is renamed into place
  only after it finished and its manifest was written, so a killed build leaves no entry;
- verified loads: an entry whose manifest is missing or unreadable, whose hash is not the
  recipe's, or whose files do not match the manifest's sizes and SHA-256 is moved aside and
  rebuilt, never returned.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from reasonlab.models.recipes import Recipe, config_hash, config_json, get_recipe, recipe_names

log = logging.getLogger(__name__)

ENV_VAR = "REASONLAB_CACHE"
MANIFEST = "manifest.json"
FORMAT = 1
_verified: dict[str, float] = {}  # entry folder -> manifest mtime verified in this process


class CacheError(RuntimeError):
    """The cache folder cannot be used (it names itself and why)."""


def cache_root() -> Path:
    """``$REASONLAB_CACHE``, else ``$XDG_CACHE_HOME/reasonlab``, else ``~/.cache/reasonlab``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "reasonlab"


def models_dir() -> Path:
    return cache_root() / "models"


def entry_name(name: str, micro: bool = False) -> str:
    recipe = get_recipe(name)
    h = config_hash(recipe, micro)[:16]
    return f"{name}-micro-{h}" if micro else f"{name}-{h}"


def _writable_dir(d: Path) -> Path:
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CacheError(f"model cache folder {d} cannot be written ({e.strerror or e}); "
                         f"set {ENV_VAR} to a writable folder") from None
    return d


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as f:
        t0 = time.time()
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("model cache: waiting for another process building %s", lock_path.stem)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            log.info("model cache: lock on %s after %.1f s", lock_path.stem, time.time() - t0)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_table(model_dir: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for p in sorted(model_dir.rglob("*")):
        if p.is_file():
            files[p.relative_to(model_dir).as_posix()] = {"size": p.stat().st_size,
                                                          "sha256": _sha256(p)}
    return files


def verify_entry(entry: Path, expected_hash: str | None = None) -> str | None:
    """Why ``entry`` must not be loaded (a one-line reason), or None when it is sound."""
    man_path = entry / MANIFEST
    if not man_path.is_file():
        return "no manifest"
    try:
        man = json.loads(man_path.read_text())
        files = man["files"]
        h = man["config_hash"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest ({e})"
    if expected_hash is not None and h != expected_hash:
        return "manifest hash is not the recipe's"
    model = entry / "model"
    if "config.json" not in files:
        return "manifest lists no config.json"
    for rel, meta in files.items():
        p = model / rel
        if not p.is_file():
            return f"missing file {rel}"
        if p.stat().st_size != meta.get("size"):
            return f"size of {rel} differs from the manifest"
        if _sha256(p) != meta.get("sha256"):
            return f"SHA-256 of {rel} differs from the manifest"
    return None


def _discard(entry: Path, reason: str) -> None:
    log.warning("model cache: %s is not sound (%s); rebuilding it", entry.name, reason)
    aside = entry.with_name(f".tmp-{entry.name}-bad-{uuid.uuid4().hex[:8]}")
    entry.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def _build(recipe: Recipe, micro: bool, entry: Path, h: str) -> None:
    cfg = recipe.config_for(micro)
    tmp = entry.with_name(f".tmp-{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        model = tmp / "model"
        model.mkdir()
        t0, c0 = time.time(), time.process_time()
        log.info("model cache: building %s%s", recipe.name, " (micro)" if micro else "")
        recipe.build(cfg, model)
        wall, cpu = time.time() - t0, time.process_time() - c0
        if not (model / "config.json").is_file():
            raise CacheError(f"recipe {recipe.name!r} wrote no config.json into its model folder")
        manifest = {"format": FORMAT, "recipe": recipe.name, "version": recipe.version,
                    "micro": micro, "config_hash": h, "config": json.loads(config_json(cfg)),
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "build_wall_s": round(wall, 3), "build_cpu_s": round(cpu, 3),
                    "files": _file_table(model)}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, entry)  # the publish: atomic on one file system
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _clean_stale(root: Path, entry_name_: str) -> None:
    """Remove leftovers of killed builds: this entry's (called with its lock held, so no live
    builder owns them) and any other entry's whose lock is free (nobody is building it)."""
    for p in root.glob(f".tmp-{entry_name_}-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp-*"):
        other = p.name[len(".tmp-"):].rsplit("-", 2)[0]
        lock = root / ".locks" / f"{other}.lock"
        if other == entry_name_ or not p.is_dir() or not lock.exists():
            continue
        with open(lock, "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built right now
            try:
                shutil.rmtree(p, ignore_errors=True)
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def model_path(name: str, *, micro: bool = False) -> Path:
    """The HF model folder of recipe ``name`` (its micro variant if ``micro``), built on first
    use; waits for another process building it and then returns that model."""
    recipe = get_recipe(name)
    h = config_hash(recipe, micro)
    ename = f"{name}-micro-{h[:16]}" if micro else f"{name}-{h[:16]}"
    root = models_dir()
    entry = root / ename
    man = entry / MANIFEST
    key = str(entry)
    if man.is_file() and _verified.get(key) == man.stat().st_mtime:
        return entry / "model"
    _writable_dir(root)
    with _locked(root / ".locks" / f"{ename}.lock"):
        if entry.exists():
            why = verify_entry(entry, h)
            if why is None:
                _verified[key] = man.stat().st_mtime
                return entry / "model"
            _discard(entry, why)
        _clean_stale(root, ename)
        _build(recipe, micro, entry, h)
        _verified[key] = man.stat().st_mtime
    return entry / "model"


def is_built(name: str, *, micro: bool = False) -> bool:
    """Whether a published entry exists (not verified; :func:`model_path` verifies)."""
    return (models_dir() / entry_name(name, micro) / MANIFEST).is_file()


def manifest(name: str, *, micro: bool = False) -> dict[str, Any] | None:
    """The manifest of a published entry, or None."""
    p = models_dir() / entry_name(name, micro) / MANIFEST
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def resolve_model(spec: str | os.PathLike) -> Path:
    """A model folder from ``spec``: an existing folder with ``config.json``, or a recipe name
    (``NAME`` or ``NAME:micro``) built on first use. Anything else raises FileNotFoundError
    naming the known recipes."""
    s = str(spec)
    p = Path(s).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"model folder {p} has no config.json")
        return p
    name, _, variant = s.partition(":")
    if variant not in ("", "micro"):
        raise ValueError(f"model {s!r}: the only recipe variant is ':micro'")
    known = recipe_names()
    if name not in known:
        raise FileNotFoundError(f"model {s!r} is neither a model folder nor a known recipe; "
                                f"known recipes: {', '.join(known) or '(none)'}")
    return model_path(name, micro=variant == "micro")
