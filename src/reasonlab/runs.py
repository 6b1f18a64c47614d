"""Run directories: config.json, metrics.jsonl, results.json, plots, checkpoints, seed.

A run is a record (DESIGN.md principle 5). Everything is written atomically (temp file +
``os.replace``) so a kill never leaves a half-written file, and a run opened again on the same
directory with the same config resumes instead of starting over.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

log = logging.getLogger(__name__)
_UMASK = os.umask(0)
os.umask(_UMASK)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def to_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, default=_json_default, sort_keys=False)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, to_json(obj) + "\n")


def read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {p}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"malformed JSON in {p} line {e.lineno}: {e.msg}") from None


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file; a malformed line raises naming file and line number."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    with p.open() as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"malformed JSON in {p} line {i}: {e.msg}") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{p} line {i}: expected a JSON object, got {type(rec).__name__}")
            yield rec


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write records as JSONL atomically (deterministic key order as given)."""
    atomic_write_text(path, "".join(to_json(r, indent=None) + "\n" for r in records))


def finished_results(out_dir: str | Path, *outputs: str) -> dict[str, Any] | None:
    """The results of a finished stage: ``out_dir/results.json`` when it and every one of
    ``outputs`` (paths relative to ``out_dir``, e.g. ``"model/config.json"``) exist; None when the
    stage is still to run. The one "skip the stage if its results exist" check of every runner."""
    d = Path(out_dir)
    if not (d / "results.json").exists() or not all((d / o).exists() for o in outputs):
        return None
    return read_json(d / "results.json")


class RunConfigMismatch(RuntimeError):
    """A run directory exists with a different config; resume refused."""


def _with_new_defaults(old: Any, defaults: Any) -> Any:
    """``old`` (a stored config) with the keys it lacks taken from ``defaults`` (a newer config
    class's defaults), recursively: a run written before a config key existed resumes when the
    key is at its default."""
    if not isinstance(old, dict) or not isinstance(defaults, dict):
        return old
    out = dict(old)
    for k, v in defaults.items():
        out[k] = _with_new_defaults(old[k], v) if k in old else v
    return out


def _defaults_of(config: Any) -> dict[str, Any]:
    """The declared field defaults of ``config``'s class, as JSON values, without running its
    validation (a class whose bare defaults are invalid still has defaults for its other keys)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            try:
                value = f.default_factory()
            except Exception:  # a nested default that cannot be built: no default for this key
                continue
        else:
            continue
        out[f.name] = json.loads(to_json(dataclasses.asdict(value) if dataclasses.is_dataclass(value)
                                         else value))
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def record_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: X there, Y now`` for every key whose value differs between two run records."""
    a, b = _flatten(stored), _flatten(current)
    return [f"{k}: {a.get(k, '(absent)')!r} there, {b.get(k, '(absent)')!r} now"
            for k in sorted(set(a) | set(b)) if a.get(k, "(absent)") != b.get(k, "(absent)")]


def file_identity(path: str | Path) -> dict[str, Any]:
    """Size and SHA-256 of a file: what a run records of the data it was made from."""
    import hashlib

    p = Path(path)
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"path": str(p), "bytes": p.stat().st_size, "sha256": h.hexdigest()}


def texts_identity(texts: Any) -> dict[str, Any]:
    """Count and SHA-256 of a list of texts (or JSON-able records): a loaded data set's identity."""
    import hashlib

    h = hashlib.sha256()
    n = 0
    for t in texts:
        h.update((t if isinstance(t, str) else to_json(t, indent=None)).encode("utf-8"))
        h.update(b"\x00")
        n += 1
    return {"items": n, "sha256": h.hexdigest()}


_HASHED_BYTES = 64 << 20  # folder files up to this size are hashed; bigger ones by size and time


def input_identity(spec: str | Path | None) -> dict[str, Any] | None:
    """What a run records of one input it reads: for a file its size and SHA-256; for a folder
    (a model) the hash of its manifest when it has one, else of every file's name, size and
    contents (files over 64 MiB by size and modification time); for anything else (a data set
    or model-cache name, an endpoint) the name alone. None for an empty spec. Recorded as a run's
    ``identity``, so the same path holding other contents is another job on resume."""
    import hashlib

    from reasonlab.lm.checkpoint import MANIFEST

    if spec is None or str(spec) == "":
        return None
    p = Path(spec)
    if p.is_file():
        return file_identity(p)
    if not p.is_dir():
        return {"name": str(spec)}
    if (p / MANIFEST).is_file():
        return {"path": str(p), "manifest_sha256": file_identity(p / MANIFEST)["sha256"]}
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.endswith(".tmp"))
    for q in files:
        st = q.stat()
        h.update(f"{q.relative_to(p).as_posix()}\x00{st.st_size}\x00".encode())
        h.update(file_identity(q)["sha256"].encode() if st.st_size <= _HASHED_BYTES
                 else str(st.st_mtime_ns).encode())
    return {"path": str(p), "files": len(files), "sha256": h.hexdigest()}


def inputs_identity(**inputs: Any) -> dict[str, Any]:
    """``{name: identity}`` of a runner's inputs: a path or name is given its
    :func:`input_identity`, a list of texts or records its :func:`texts_identity`; empty inputs
    are left out. The ``identity`` a runner passes to :class:`Run`."""
    out: dict[str, Any] = {}
    for name, value in inputs.items():
        if isinstance(value, (list, tuple)):
            out[name] = texts_identity(value)
        elif (ident := input_identity(value)) is not None:
            out[name] = ident
    return out


# What a run directory may hold before it has done any work: a refused or failed start leaves
# only these, and the corrected command may start again there.
_NO_WORK = {"config.json", "tokenizer", ".tokenizer.tmp"}


class Run:
    """One run directory.

    ``Run(out, config, seed, identity=...)`` creates it, or resumes it when ``config.json`` holds
    the same record: the whole config (every section of a job), the seed and ``identity`` (what
    the run was made from: the data set's and the tokenizer's hashes). Keys added to a config
    class since are taken at their defaults. A different record is refused, naming each differing
    key with both values, unless the directory holds no work yet (then it starts afresh) or
    ``overwrite`` is set (its contents are deleted). ``log(step=..., **metrics)`` appends to
    metrics.jsonl; ``save_results`` writes results.json; ``path('plot.png')`` and
    ``checkpoint_dir`` give places for artifacts.
    """

    def __init__(self, out_dir: str | Path, config: Any = None, seed: int | None = None,
                 *, overwrite: bool = False, name: str | None = None,
                 identity: dict[str, Any] | None = None):
        self.dir = Path(out_dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise ValueError(f"run directory {self.dir} is a file, not a directory")
        cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else (config or {})
        record = {"name": name, "seed": seed, "config": cfg}
        if identity is not None:
            record["identity"] = identity
        cfg_path = self.dir / "config.json"
        self.resumed = False
        if cfg_path.exists():
            old = read_json(cfg_path)
            diffs = [] if overwrite else self._differences(old, record, config)
            if overwrite:
                log.info("--overwrite: deleting the contents of %s", self.dir)
                self._clear()
            elif diffs and self.has_work():
                raise RunConfigMismatch(
                    f"run directory {self.dir} was made by another job ({'; '.join(diffs)}); "
                    "rerun with --overwrite to delete it and start fresh, or use another --out")
            elif diffs:
                log.info("%s holds no work yet; starting it again with the new config", self.dir)
                self._clear()
            else:
                self.resumed = True
        if not self.resumed:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(cfg_path, record)
        self.seed = seed
        self.config = config
        self._t0 = time.time()

    @staticmethod
    def _differences(old: dict[str, Any], record: dict[str, Any], config: Any) -> list[str]:
        stored = json.loads(to_json(old.get("config")))
        current = json.loads(to_json(record["config"]))
        if dataclasses.is_dataclass(config) and stored != current:
            stored = _with_new_defaults(stored, _defaults_of(config))
        diffs = record_differences(stored, current)
        if old.get("seed") != record["seed"]:
            diffs.append(f"seed: {old.get('seed')!r} there, {record['seed']!r} now")
        if "identity" in old and "identity" in record:  # runs written before identities: config only
            diffs += record_differences({"identity": old["identity"]},
                                        json.loads(to_json({"identity": record["identity"]})))
        return diffs

    def has_work(self) -> bool:
        """Whether the directory holds anything a run made beyond its config and tokenizer (empty
        files and folders, made before a first step, are no work)."""
        def empty(p: Path) -> bool:
            if p.is_dir() and not p.is_symlink():
                return all(empty(q) for q in p.iterdir())
            return p.is_file() and p.stat().st_size == 0

        return any(not (p.name in _NO_WORK or p.name.endswith(".tmp") or empty(p))
                   for p in self.dir.iterdir())

    def _clear(self) -> None:
        import shutil

        for p in self.dir.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    def restart_metrics(self) -> None:
        """Drop every metric line: a runner that restarts from step 0 calls this so a rerun after a
        kill does not append the same steps twice."""
        (self.dir / "metrics.jsonl").unlink(missing_ok=True)

    @property
    def checkpoint_dir(self) -> Path:
        d = self.dir / "checkpoints"
        d.mkdir(exist_ok=True)
        return d

    def path(self, name: str) -> Path:
        return self.dir / name

    def log(self, step: int | None = None, **metrics: Any) -> None:
        """Append one line to metrics.jsonl (flushed at once so a kill loses nothing)."""
        rec = {"step": step, "time_s": round(time.time() - self._t0, 3), **metrics}
        with (self.dir / "metrics.jsonl").open("a") as f:
            f.write(to_json(rec, indent=None) + "\n")
            f.flush()

    def metrics(self) -> list[dict[str, Any]]:
        p = self.dir / "metrics.jsonl"
        return list(read_jsonl(p)) if p.exists() else []

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric lines logged after ``after_step`` (used when resuming a checkpoint)."""
        keep = [m for m in self.metrics() if m.get("step") is None or m["step"] <= after_step]
        write_jsonl(self.dir / "metrics.jsonl", keep)

    def save_results(self, results: dict[str, Any]) -> None:
        atomic_write_json(self.dir / "results.json", results)

    def results(self) -> dict[str, Any] | None:
        p = self.dir / "results.json"
        return read_json(p) if p.exists() else None

    def finished(self, *outputs: str) -> dict[str, Any] | None:
        """This run's results when it has finished (results.json and ``outputs`` exist), else None."""
        return finished_results(self.dir, *outputs)
