"""Stage 1: a small ViT that reads handwritten numbers, pre-trained here.

The encoder is ``transformers``' ``MllamaVisionModel`` (the Llama 3.2 Vision image encoder:
patch embedding, gated tile and position embeddings, a local and a gated global transformer,
intermediate layers concatenated to the output), at toy size: one 1x1 tile of 16x16 pixels,
4x4 patches. It is trained with a classification objective, the tens and the units digit of the
number from the class-token output (two linear heads kept in ``heads.safetensors`` next to the
HF model folder), on numbers rendered from the training part of ``load_digits``.

Llama 3 paper, arXiv:2407.21783, §7.2 (the image encoder, there a ViT-H/14 pre-trained on
image-text pairs); architecture as in transformers' ``modeling_mllama.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reasonlab.config import ConfigError, check_order, check_range
from reasonlab.vision.data import digit_pool, render_number, to_pixels

HEADS_FILE = "heads.safetensors"


@dataclass
class EncoderConfig:
    image_size: int = 16  # canvas side; holds two 8x8 digits side by side
    patch_size: int = 4
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_global_layers: int = 1
    attention_heads: int = 4
    intermediate_size: int = 128
    steps: int = 400
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("encoder.image_size", self.image_size, 16, 64)
        check_range("encoder.patch_size", self.patch_size, 2, 64)
        check_order("encoder.patch_size", self.patch_size, "encoder.image_size", self.image_size)
        if self.image_size % self.patch_size:
            raise ConfigError(f"config key 'encoder.patch_size' = {self.patch_size} does not "
                              f"divide config key 'encoder.image_size' = {self.image_size}")
        check_range("encoder.hidden_size", self.hidden_size, 8, 1024)
        check_range("encoder.attention_heads", self.attention_heads, 1, 64)
        if self.hidden_size % self.attention_heads:
            raise ConfigError(f"config key 'encoder.attention_heads' = {self.attention_heads} "
                              f"does not divide config key 'encoder.hidden_size' = {self.hidden_size}")
        check_range("encoder.num_hidden_layers", self.num_hidden_layers, 1, 32)
        check_range("encoder.num_global_layers", self.num_global_layers, 1, 8)
        check_range("encoder.intermediate_size", self.intermediate_size, 8, 8192)
        check_range("encoder.steps", self.steps, 0, 1_000_000)
        check_range("encoder.batch_size", self.batch_size, 1, 4096)
        check_range("encoder.lr", self.lr, 0.0, 1.0, lo_open=True)


def vision_config(cfg: EncoderConfig):
    """The ``MllamaVisionConfig`` of the encoder: one tile (aspect ratio 1x1), the last local
    layer's states concatenated with the final output (``vision_output_dim = 2 * hidden``)."""
    from transformers import MllamaVisionConfig

    return MllamaVisionConfig(
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
        num_global_layers=cfg.num_global_layers, attention_heads=cfg.attention_heads,
        intermediate_size=cfg.intermediate_size, image_size=cfg.image_size,
        patch_size=cfg.patch_size, max_num_tiles=1, supported_aspect_ratios=[[1, 1]],
        intermediate_layers_indices=[cfg.num_hidden_layers - 1],
        vision_output_dim=2 * cfg.hidden_size, num_channels=3)


class DigitHeads(nn.Module):
    """Tens and units digit logits from the encoder's class-token output."""

    def __init__(self, dim: int):
        super().__init__()
        self.tens = nn.Linear(dim, 10)
        self.units = nn.Linear(dim, 10)

    def forward(self, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tens(cls), self.units(cls)


def class_token(encoder, pixels: torch.Tensor, ar_ids: torch.Tensor, ar_mask: torch.Tensor
                ) -> torch.Tensor:
    """(B, vision_output_dim): the class-token output of the one tile of the one image."""
    out = encoder(pixel_values=pixels, aspect_ratio_ids=ar_ids, aspect_ratio_mask=ar_mask)
    return out.last_hidden_state[:, 0, 0, 0]


def digit_loss(tens_logits: torch.Tensor, units_logits: torch.Tensor, numbers: torch.Tensor
               ) -> torch.Tensor:
    """Mean cross-entropy of the two digits (the pure objective of stage 1)."""
    f = nn.functional.cross_entropy
    return 0.5 * (f(tens_logits, numbers // 10) + f(units_logits, numbers % 10))


def number_batch(rng: random.Random, n: int, pool, size: int
                 ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    nums = [rng.randint(0, 99) for _ in range(n)]
    return to_pixels([render_number(x, rng, pool, size) for x in nums]), torch.tensor(nums)


def train_encoder(cfg: EncoderConfig, *, progress: bool = False, log=None
                  ) -> tuple[Any, DigitHeads, dict[str, Any]]:
    """Train a fresh encoder and its heads; returns them and the loss curve."""
    import time

    from tqdm import tqdm
    from transformers import MllamaVisionModel

    torch.manual_seed(cfg.seed)
    rng = random.Random(f"encoder:{cfg.seed}")
    encoder = MllamaVisionModel(vision_config(cfg))
    heads = DigitHeads(2 * cfg.hidden_size)
    params = list(encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * max(0.1, 1 - s / max(cfg.steps, 1)))
    pool = digit_pool(heldout=False)
    losses: list[float] = []
    t0 = time.time()
    encoder.train()
    for step in tqdm(range(cfg.steps), desc="encoder", disable=not progress):
        (pix, ids, mask), nums = number_batch(rng, cfg.batch_size, pool, cfg.image_size)
        loss = digit_loss(*heads(class_token(encoder, pix, ids, mask)), nums)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log is not None and (step % 25 == 0 or step == cfg.steps - 1):
            log(step=step, stage="encoder", loss=losses[-1])
    encoder.eval()
    n_params = sum(p.numel() for p in params)
    return encoder, heads, {"losses": losses, "train_seconds": time.time() - t0,
                            "trainable_params": n_params}


@torch.no_grad()
def read_numbers(encoder, heads: DigitHeads, images) -> list[int]:
    """The numbers the encoder reads off canvases (greedy tens * 10 + units)."""
    t, u = heads(class_token(encoder, *to_pixels(list(images))))
    return (t.argmax(-1) * 10 + u.argmax(-1)).tolist()


def encoder_accuracy(encoder, heads: DigitHeads, *, n: int = 500, seed: int = 0,
                     heldout: bool = True) -> float:
    """Share of ``n`` random numbers (held-out handwriting by default) read exactly."""
    rng = random.Random(f"encoder-eval:{seed}")
    pool = digit_pool(heldout)
    size = encoder.config.image_size
    nums = [rng.randint(0, 99) for _ in range(n)]
    preds: list[int] = []
    for i in range(0, n, 128):
        preds += read_numbers(encoder, heads, [render_number(x, rng, pool, size)
                                               for x in nums[i:i + 128]])
    return sum(p == x for p, x in zip(preds, nums)) / n


def save_encoder(encoder, heads: DigitHeads, path: str | Path) -> None:
    """An HF folder (``from_pretrained``-loadable ``MllamaVisionModel``) plus the heads."""
    from safetensors.torch import save_file

    path = Path(path)
    encoder.save_pretrained(path)
    save_file({k: v.contiguous() for k, v in heads.state_dict().items()}, str(path / HEADS_FILE))


def load_encoder(path: str | Path) -> tuple[Any, DigitHeads]:
    from safetensors.torch import load_file
    from transformers import MllamaVisionModel

    path = Path(path)
    encoder = MllamaVisionModel.from_pretrained(path).eval()
    heads = DigitHeads(encoder.config.vision_output_dim)
    heads.load_state_dict(load_file(str(path / HEADS_FILE)))
    return encoder, heads
