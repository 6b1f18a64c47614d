"""Weight averaging: the element-wise mean of models that share an architecture and a start.

Llama 3 (arXiv:2407.21783 §4.1.5) averages models from runs with different data or
hyperparameters at each post-training stage; model soups (arXiv:2203.05482) average fine-tuned
models of one starting point. :func:`average_state_dicts` is the pure core (state dicts in, state
dict out); :func:`average_models` averages HF model directories, trainer checkpoint directories or
``.safetensors`` files into an HF model directory, written atomically. Any method can use it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence


def average_state_dicts(state_dicts: Sequence[dict], weights: Sequence[float] | None = None) -> dict:
    """Weighted element-wise mean of state dicts with the same keys and shapes (float tensors are
    averaged in float64 and cast back; other tensors must be equal and are kept)."""
    import torch

    if not state_dicts:
        raise ValueError("average_state_dicts: no state dicts")
    w = [1.0] * len(state_dicts) if not weights else [float(x) for x in weights]
    if len(w) != len(state_dicts):
        raise ValueError(f"{len(w)} weights for {len(state_dicts)} state dicts")
    if any(x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be non-negative and not all zero, got {w}")
    total = sum(w)
    w = [x / total for x in w]
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], 1):
        if set(sd) != set(keys):
            diff = sorted(set(sd) ^ set(keys))[:3]
            raise ValueError(f"state dict {i} has different keys (e.g. {diff})")
    out = {}
    for k in keys:
        ts = [sd[k] for sd in state_dicts]
        if any(t.shape != ts[0].shape for t in ts):
            raise ValueError(f"tensor '{k}' has different shapes: {[tuple(t.shape) for t in ts]}")
        if ts[0].is_floating_point():
            acc = torch.zeros(ts[0].shape, dtype=torch.float64)
            for wi, t in zip(w, ts):
                acc += wi * t.detach().to(torch.float64).cpu()
            out[k] = acc.to(ts[0].dtype)
        else:
            if any(not torch.equal(t, ts[0]) for t in ts):
                raise ValueError(f"non-float tensor '{k}' differs between models")
            out[k] = ts[0].clone()
    return out




def _weights_file(path: Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    f = p / "model.safetensors"
    if f.exists():
        return f
    if (p / "model.safetensors.index.json").exists():
        raise ValueError(f"{p}: sharded checkpoints are not supported by weight averaging")
    raise FileNotFoundError(f"no model.safetensors in {p}")


def average_models(sources: Sequence[str | Path], out_dir: str | Path, *,
                   weights: Sequence[float] | None = None, base: str | Path | None = None) -> Path:
    """Average the weights of ``sources`` (HF model dirs, trainer checkpoint dirs or
    ``.safetensors`` files) into the HF model dir ``out_dir``; config and tokenizer files are
    copied from ``base`` (default: the first source holding a ``config.json``)."""
    from safetensors.torch import load_file, save_file

    if len(sources) < 1:
        raise ValueError("average: give at least one model")
    missing = [str(s) for s in sources if not Path(s).exists()]
    if missing:
        raise FileNotFoundError(f"average: model not found: {', '.join(missing)}")
    if base is None:
        base = next((Path(s) for s in sources if (Path(s) / "config.json").exists()), None)
        if base is None:
            raise ValueError("average: no source has a config.json; give 'base' (an HF model dir)")
    base = Path(base)
    if not (base / "config.json").exists():
        raise FileNotFoundError(f"average: no config.json in base {base}")
    sds = [load_file(str(_weights_file(Path(s)))) for s in sources]
    avg = average_state_dicts(sds, weights)
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    from reasonlab.lm.checkpoint import MANIFEST, write_manifest

    for f in base.iterdir():
        if (f.is_file() and not f.name.startswith("model") and f.suffix != ".safetensors"
                and f.name != MANIFEST):  # the base's manifest would not match the new weights
            shutil.copy2(f, tmp / f.name)
    save_file({k: v.contiguous() for k, v in avg.items()}, str(tmp / "model.safetensors"),
              metadata={"format": "pt"})
    write_manifest(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out

