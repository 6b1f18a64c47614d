"""Model folders that say what is wrong with them: a manifest of every file, checked on load.

Every HF model folder and training checkpoint the project writes carries
``reasonlab_manifest.json``: each file's size and SHA-256 (as the Hugging Face hub cache and
``safetensors`` metadata do for downloads). Loading checks it, so a truncated or corrupted weight
file fails with one line naming the file and the cause, instead of a long traceback or, worse, a
model that loads and generates garbage. Folders without a manifest (a real Llama 3 checkpoint
copied from elsewhere) load as before; ``verify=False`` (the CLI's ``--no-verify``) skips the
check.

The files are written with the process umask's permissions like every other file of a run
(``transformers``/``safetensors`` write through private temporary files).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

MANIFEST = "reasonlab_manifest.json"
FORMAT = 1


class ModelLoadError(ValueError):
    """A model folder cannot be loaded; the message names the file and the cause in one line."""


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence the ``transformers`` weight-loading and shard-writing bars for a block (a load of a
    tiny model should not print two bars); the previous setting is restored after."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_table(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of every file under ``folder`` but the manifest."""
    d = Path(folder)
    return {p.relative_to(d).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}


def apply_umask(folder: str | Path) -> None:
    """Give every file under ``folder`` the permissions the umask allows (0644 under 022)."""
    mask = os.umask(0)
    os.umask(mask)
    for p in Path(folder).rglob("*"):
        if p.is_file() and not p.is_symlink():
            os.chmod(p, 0o666 & ~mask)


def write_manifest(folder: str | Path) -> Path:
    """Write ``folder``'s manifest (atomically) after its files are complete; fix their modes."""
    from reasonlab.runs import atomic_write_json

    d = Path(folder)
    apply_umask(d)
    path = d / MANIFEST
    atomic_write_json(path, {"format": FORMAT, "files": file_table(d)})
    return path


def verify_manifest(folder: str | Path) -> bool:
    """Check ``folder`` against its manifest; False when it has none. A missing file, another
    size or another SHA-256 raises :class:`ModelLoadError` naming the file."""
    d = Path(folder)
    mpath = d / MANIFEST
    if not mpath.is_file():
        return False
    try:
        files = json.loads(mpath.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{mpath}: unreadable manifest ({e})") from None
    for rel, meta in files.items():
        p = d / rel
        if not p.is_file():
            raise ModelLoadError(f"{p}: missing (listed in {MANIFEST})")
        size = p.stat().st_size
        if size != meta.get("size"):
            raise ModelLoadError(f"{p}: {size} bytes, the manifest says {meta.get('size')} "
                                 "(truncated or replaced)")
        if sha256_file(p) != meta.get("sha256"):
            raise ModelLoadError(f"{p}: SHA-256 differs from the manifest (corrupted or replaced); "
                                 "pass --no-verify to load it anyway")
    return True


def check_model_folder(path: str | Path, *, verify: bool = True) -> Path:
    """``path`` as an HF model folder ready to load, or one line saying what is wrong: nothing
    there, a run folder instead of its ``model/``, no ``config.json``, or a file that does not
    match the manifest."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no model at {p}: the folder does not exist")
    if not p.is_dir():
        raise ModelLoadError(f"no model at {p}: it is a file; give the model folder")
    if not _is_hf_config(p / "config.json"):
        for sub in ("model", "final"):
            if _is_hf_config(p / sub / "config.json"):
                raise ModelLoadError(f"no model here ({p}); did you mean {p / sub}?")
        raise ModelLoadError(f"no model here ({p}): no model config.json")
    if verify:
        verify_manifest(p)
    return p


def _is_hf_config(path: Path) -> bool:
    """Whether ``path`` is a model's config.json (a run directory's config.json is a run record)."""
    if not path.is_file():
        return False
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return True  # let the loader report what is wrong with it
    return isinstance(cfg, dict) and ("model_type" in cfg or "architectures" in cfg)


def _weights_file(folder: Path) -> str:
    files = sorted(folder.glob("*.safetensors"))
    return str(files[0]) if len(files) == 1 else str(folder / "*.safetensors")


def load_causal_lm(path: str | Path, *, verify: bool = True, **kwargs: Any):
    """``AutoModelForCausalLM.from_pretrained`` on a checked folder (safetensors only, nothing
    downloaded); any loading error becomes one line naming the file and the cause."""
    from transformers import AutoModelForCausalLM

    from reasonlab.lm.portable import note_if_legacy

    p = check_model_folder(path, verify=verify)
    note_if_legacy(p)
    kwargs.setdefault("local_files_only", True)
    kwargs.setdefault("use_safetensors", True)
    try:
        with quiet_transformers():
            return AutoModelForCausalLM.from_pretrained(str(p), **kwargs)
    except Exception as e:  # safetensors, torch and transformers each raise their own kinds
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load the weights in {_weights_file(p)}: {cause}") from None


def load_tokenizer_from(path: str | Path):
    """The folder's tokenizer; an error names the folder in one line."""
    from transformers import AutoTokenizer

    from reasonlab.lm.portable import note_if_legacy

    p = Path(path)
    note_if_legacy(p)
    try:
        return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception as e:
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load the tokenizer in {p}: {cause}") from None


def save_model_folder(model: Any, tokenizer: Any, folder: str | Path, **save_kwargs: Any) -> Path:
    """``save_pretrained`` (safetensors) of the model and tokenizer in the layout every Llama 3
    reader loads (:mod:`reasonlab.lm.portable`), then the manifest."""
    from reasonlab.lm.portable import make_portable

    d = Path(folder)
    save_kwargs.setdefault("safe_serialization", True)
    with quiet_transformers():
        model.save_pretrained(str(d), **save_kwargs)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(d))
    make_portable(d)
    write_manifest(d)
    return d
