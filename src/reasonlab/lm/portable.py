"""Model folders in the layout every Llama 3 reader knows, not only ``transformers`` 5.

``transformers`` 5 writes RoPE's base only inside ``rope_parameters`` and a tokenizer folder with
``tokenizer_class: TokenizersBackend`` and its extra special tokens as a list. Older readers
(``transformers`` 4.x, which many inference servers, converters and attack libraries pin) fall back
to θ = 10,000 without a word -- the model loads and answers wrong -- and cannot load the tokenizer
at all. :func:`make_portable` adds, next to what version 5 wrote, the keys of Meta's published
Llama 3 / 3.1 files:

- ``config.json``: top-level ``rope_theta``; ``rope_scaling`` (``null`` for plain RoPE, the
  ``llama3`` type and its four factors for 3.1-style scaling); ``torch_dtype`` next to ``dtype``.
  Version 5 reads the same values from them as from ``rope_parameters``.
- ``tokenizer_config.json``: ``tokenizer_class: PreTrainedTokenizerFast``, the extra special
  tokens as ``additional_special_tokens``, ``added_tokens_decoder``, ``model_input_names`` and
  the chat template (which stays in ``chat_template.jinja`` too); plus ``special_tokens_map.json``.

Every project save of a model or tokenizer folder calls it. A folder written before this layout
still loads: :func:`note_if_legacy` logs one line naming the missing keys (they are filled in when
the folder is saved again, or in place by :func:`upgrade_folder`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The RoPE types whose parameters Meta's configs (and transformers 4.x) keep in ``rope_scaling``.
_ROPE_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
_SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_noted: set[str] = set()


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write(path: Path, obj: Any) -> None:
    from reasonlab.runs import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _flat_rope(cfg: dict) -> dict | None:
    """A Llama config's single (not per-layer) ``rope_parameters`` holding ``rope_theta``."""
    rope = cfg.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_theta" not in rope:
        return None
    if any(isinstance(v, dict) for v in rope.values()):
        return None  # per-layer-type RoPE: no single top-level equivalent
    return rope


def portable_config(cfg: dict) -> dict:
    """``cfg`` (a ``config.json`` dict) with the top-level Llama 3 keys added from
    ``rope_parameters``; configs of other model types come back unchanged."""
    out = dict(cfg)
    rope = _flat_rope(cfg) if cfg.get("model_type") == "llama" else None
    if rope is None:
        return out
    out["rope_theta"] = float(rope["rope_theta"])
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        out["rope_scaling"] = None
    else:
        out["rope_scaling"] = {"rope_type": kind, **{k: v for k, v in rope.items()
                                                      if k not in ("rope_theta", "rope_type", "type")}}
        if kind == "llama3":
            missing = [k for k in _ROPE_SCALING_KEYS if k not in rope]
            if missing:
                raise ValueError(f"rope_parameters of type llama3 lack {', '.join(missing)}")
    if "dtype" in out and "torch_dtype" not in out:
        out["torch_dtype"] = out["dtype"]
    return out


def _added_tokens(tokenizer_json: dict | None) -> dict[str, dict]:
    """``added_tokens_decoder`` as Meta's tokenizer_config.json writes it, from tokenizer.json."""
    out = {}
    for t in (tokenizer_json or {}).get("added_tokens", []):
        out[str(t["id"])] = {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                                "single_word", "special") if k in t}
    return out


def portable_tokenizer_config(tc: dict, *, tokenizer_json: dict | None = None,
                              chat_template: str | None = None) -> tuple[dict, dict]:
    """(``tokenizer_config.json``, ``special_tokens_map.json``) in the layout ``AutoTokenizer``
    of transformers 4.4x-4.57 loads as well as 5: the fast class by its 4.x name, the extra special
    tokens as ``additional_special_tokens`` and the chat template inline."""
    out = dict(tc)
    if out.get("tokenizer_class") in (None, "TokenizersBackend"):
        out["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = out.get("extra_special_tokens")
    if isinstance(extra, list):  # 4.x reads a list only under this name (a dict there is named tokens)
        out.pop("extra_special_tokens")
        out["additional_special_tokens"] = [t["content"] if isinstance(t, dict) else t for t in extra]
    added = _added_tokens(tokenizer_json)
    if added and "added_tokens_decoder" not in out:
        out["added_tokens_decoder"] = added
    # Without this 4.x tokenizers also return token_type_ids, which generate() rejects.
    out.setdefault("model_input_names", ["input_ids", "attention_mask"])
    if chat_template is not None and "chat_template" not in out:
        out["chat_template"] = chat_template
    smap = {k: out[k] for k in _SPECIAL_ATTRS if isinstance(out.get(k), str)}
    if out.get("additional_special_tokens"):
        smap["additional_special_tokens"] = list(out["additional_special_tokens"])
    return out, smap


def make_portable(folder: str | Path) -> list[str]:
    """Rewrite ``folder``'s ``config.json`` and tokenizer files in the portable layout (a no-op on
    files already in it); returns the names of the files written. Call it before the manifest."""
    d = Path(folder)
    written = []
    cfg = _read(d / "config.json")
    if isinstance(cfg, dict):
        new = portable_config(cfg)
        if new != cfg:
            _write(d / "config.json", new)
            written.append("config.json")
    tc = _read(d / "tokenizer_config.json")
    if isinstance(tc, dict) and (d / "tokenizer.json").is_file():
        jinja = d / "chat_template.jinja"
        template = jinja.read_text(encoding="utf-8") if jinja.is_file() else None
        new, smap = portable_tokenizer_config(tc, tokenizer_json=_read(d / "tokenizer.json"),
                                              chat_template=template)
        if new != tc:
            _write(d / "tokenizer_config.json", new)
            written.append("tokenizer_config.json")
        if template is None and isinstance(new.get("chat_template"), str):
            jinja.write_text(new["chat_template"], encoding="utf-8")
            written.append("chat_template.jinja")
        if smap and _read(d / "special_tokens_map.json") != smap:
            _write(d / "special_tokens_map.json", smap)
            written.append("special_tokens_map.json")
    return written


def legacy_keys(folder: str | Path) -> list[str]:
    """What ``folder`` lacks of the portable layout ([] when it has it all, or is not ours)."""
    d = Path(folder)
    missing = []
    cfg = _read(d / "config.json")
    if isinstance(cfg, dict):
        new = portable_config(cfg)
        missing += [f"config.json {k}" for k in ("rope_theta", "rope_scaling") if k in new and k not in cfg]
    tc = _read(d / "tokenizer_config.json")
    if isinstance(tc, dict) and (d / "tokenizer.json").is_file():
        if tc.get("tokenizer_class") in (None, "TokenizersBackend"):
            missing.append(f"tokenizer_class {tc.get('tokenizer_class')} (4.x needs PreTrainedTokenizerFast)")
        if isinstance(tc.get("extra_special_tokens"), list):
            missing.append("additional_special_tokens")
        if (d / "chat_template.jinja").is_file() and "chat_template" not in tc:
            missing.append("tokenizer_config.json chat_template")
    return missing


def note_if_legacy(folder: str | Path) -> list[str]:
    """Log once per folder a one-line note when ``folder`` predates the portable layout; the
    missing keys are returned."""
    missing = legacy_keys(folder)
    key = str(Path(folder).resolve())
    if missing and key not in _noted:
        _noted.add(key)
        log.warning("%s was saved in an older layout (missing: %s); it loads as before here, and the "
                    "keys are filled in when it is saved again (or by "
                    "reasonlab.lm.portable.upgrade_folder)", folder, "; ".join(missing))
    return missing


def upgrade_folder(folder: str | Path) -> list[str]:
    """Rewrite an existing folder in place in the portable layout; its manifest (if any) is
    checked first and written again after."""
    from reasonlab.lm.checkpoint import MANIFEST, verify_manifest, write_manifest

    d = Path(folder)
    had_manifest = verify_manifest(d)
    written = make_portable(d)
    if written and had_manifest and (d / MANIFEST).exists():
        write_manifest(d)
    return written
