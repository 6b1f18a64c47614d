"""Export a trained B-LoRA adapter as a standard HF PEFT LoRA adapter.

With the gates at their evaluation values each B-LoRA module is a rank-k LoRA update
``scaling * B[:, :k] diag(E[:k]) A[:k]`` (k = its effective rank); we write ``lora_A = A[:k]`` and
``lora_B = B[:, :k] diag(E[:k])`` with ``rank_pattern`` / ``alpha_pattern`` giving every module its
own rank k and an alpha that reproduces our scaling, so ``peft.PeftModel.from_pretrained`` loads it
with no new code. ``quantized=True`` writes the fake-quantized values (the model as evaluated),
``False`` the full-precision ones; the learned bit-widths ride along as metadata
(``blora_bits.json`` and the safetensors header). File layout and key names follow PEFT's
``save_pretrained`` (``adapter_config.json``, ``adapter_model.safetensors``, keys
``base_model.model.<module>.lora_{A,B}.weight``), checked by loading with PEFT in the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from reasonlab.peft.blora import blora_layers, report, set_quantize


@torch.no_grad()
def export_peft(model: nn.Module, out_dir: str | Path, *, quantized: bool = True,
                base_model_name_or_path: str | None = None) -> dict:
    """Write ``model``'s B-LoRA adapters as a PEFT LoRA adapter into ``out_dir``; returns the
    ``rank_pattern`` and the bit-widths."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    from reasonlab.runs import atomic_write_json

    layers = list(blora_layers(model))
    if not layers:
        raise ValueError("the model has no B-LoRA adapters to export")
    rep = report(model)
    state, ranks, alphas = {}, {}, {}
    was = {n: (l.training, l.quantize) for n, l in layers}
    for n, l in layers:
        l.train(False)
        l.quantize = quantized
        a, e, b = l.adapter_weights()
        k = l.effective_rank()
        # Ranks are nested, so the first k are exactly the ones on.
        state[f"base_model.model.{n}.lora_A.weight"] = a[:k].contiguous().cpu()
        state[f"base_model.model.{n}.lora_B.weight"] = (b[:, :k] * e[:k]).contiguous().cpu()
        ranks[n] = k
        alphas[n] = l.scaling * k  # PEFT's scaling is alpha / r
    for n, l in layers:
        l.train(was[n][0])
        l.quantize = was[n][1]
    r_max = max(ranks.values())
    cfg = LoraConfig(r=r_max, lora_alpha=alphas[max(ranks, key=ranks.get)],
                     target_modules=sorted(ranks), rank_pattern=_patterns(ranks),
                     alpha_pattern=_patterns(alphas), lora_dropout=0.0, bias="none",
                     base_model_name_or_path=base_model_name_or_path)
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(str(d))
    bits = rep["bit_widths"]
    tmp = d / "adapter_model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt", "blora_bit_widths": json.dumps(bits),
                                         "blora_quantized": str(quantized)})
    tmp.replace(d / "adapter_model.safetensors")
    info = {"rank_pattern": ranks, "bit_widths": bits, "quantized": quantized,
            "relative_bops": rep["relative_bops"]}
    atomic_write_json(d / "blora_bits.json", info)
    return info


def _patterns(values: dict[str, float]) -> dict[str, float]:
    """Full module names as PEFT patterns (escaped, so a dot only matches a dot)."""
    import re

    return {re.escape(n): v for n, v in values.items()}


def load_peft(base_model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """Load an exported adapter with plain PEFT (what any LoRA user would do)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(adapter_dir))


__all__ = ["export_peft", "load_peft", "set_quantize"]
