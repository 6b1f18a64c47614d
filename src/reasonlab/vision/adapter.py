"""Stage 2: the compositional image adapter, a ``MllamaForConditionalGeneration`` assembled from a
frozen text solver and the stage-1 encoder.

The solver's ``LlamaForCausalLM`` layers are copied into an ``MllamaTextModel`` whose layer list
also holds ``MllamaCrossAttentionDecoderLayer`` blocks: one before self-attention layer ``j`` for
every ``j`` divisible by ``cross_attention_every`` (4, the paper's rule, by default; so a 3-layer
tiny solver gets one, before its first layer). Each cross-attention block adds
``tanh(gate) * attention`` and ``tanh(gate) * mlp`` to the residual stream with both gates at
zero, so the combined model's logits equal the solver's at the start; on a text-only prompt
(no ``pixel_values``) ``transformers`` skips the cross-attention layers altogether, so the
text path stays the solver's exactly however the adapter is trained. Only the cross-attention
blocks and the vision-to-text projection are trained (the encoder optionally); the language model
is frozen. The image placeholder ``<|image|>`` is the first of the eight extra embedding rows
Mllama keeps after the vocabulary (id = ``vocab_size``), set to zero and frozen.

Llama 3 paper, arXiv:2407.21783, §7.2-7.4 (cross-attention layers after every fourth
self-attention layer, language model frozen, image adapter trained); code compared against:
transformers' ``modeling_mllama.py`` (the architecture used here unchanged) and
``LlamaForCausalLM`` (the text-only logits, test: maximum absolute difference).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from reasonlab.config import check_range
from reasonlab.lm.base import Generation, LanguageModel, Message, ScoredContinuation
from reasonlab.vision.data import IMAGE_TOKEN, VisualProblem, to_pixels


@dataclass
class AdapterConfig:
    cross_attention_every: int = 4  # a cross-attention block before every 4th self-attention layer
    train_encoder: bool = False  # the paper also updates the image encoder; off: cheaper
    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("adapter.cross_attention_every", self.cross_attention_every, 1, 64)
        check_range("adapter.steps", self.steps, 0, 1_000_000)
        check_range("adapter.batch_size", self.batch_size, 1, 4096)
        check_range("adapter.lr", self.lr, 0.0, 1.0, lo_open=True)


def cross_layer_indices(num_self_layers: int, every: int) -> list[int]:
    """Indices, in the combined layer list, of the cross-attention blocks: one before each
    self-attention layer ``j`` with ``j % every == 0``."""
    out, pos = [], 0
    for j in range(num_self_layers):
        if j % every == 0:
            out.append(pos)
            pos += 1
        pos += 1
    return out


def add_image_token(tokenizer) -> int:
    """Add ``<|image|>`` to the solver's tokenizer (it gets id ``len(tokenizer)``) and return it."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def assemble(solver, encoder, every: int = 4):
    """A ``MllamaForConditionalGeneration`` from a ``LlamaForCausalLM`` solver and a
    ``MllamaVisionModel`` encoder (weights copied; cross-attention blocks fresh, gates zero)."""
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaTextConfig

    sc = solver.config
    if sc.head_dim != sc.hidden_size // sc.num_attention_heads:
        raise ValueError(f"solver head_dim {sc.head_dim} is not hidden_size / heads "
                         f"({sc.hidden_size} / {sc.num_attention_heads}); Mllama cannot hold it")
    if getattr(sc, "attention_bias", False) or getattr(sc, "mlp_bias", False):
        raise ValueError("solver uses attention or MLP biases; Mllama's text layers have none")
    n_self = sc.num_hidden_layers
    cross = cross_layer_indices(n_self, every)
    text = MllamaTextConfig(
        vocab_size=sc.vocab_size, hidden_size=sc.hidden_size, hidden_act=sc.hidden_act,
        num_hidden_layers=n_self + len(cross), num_attention_heads=sc.num_attention_heads,
        num_key_value_heads=sc.num_key_value_heads, intermediate_size=sc.intermediate_size,
        rope_parameters=dict(sc.rope_parameters), rms_norm_eps=sc.rms_norm_eps,
        max_position_embeddings=sc.max_position_embeddings, tie_word_embeddings=False,
        cross_attention_layers=cross, bos_token_id=sc.bos_token_id, eos_token_id=sc.eos_token_id,
        pad_token_id=sc.pad_token_id)
    cfg = MllamaConfig(vision_config=encoder.config.to_dict(), text_config=text.to_dict(),
                       image_token_index=sc.vocab_size)
    torch.manual_seed(0)
    model = MllamaForConditionalGeneration(cfg)
    lm = model.model.language_model
    with torch.no_grad():
        self_layers = [lay for i, lay in enumerate(lm.layers) if i not in cross]
        for src, dst in zip(solver.model.layers, self_layers):
            dst.load_state_dict(src.state_dict())
        lm.embed_tokens.weight.zero_()
        lm.embed_tokens.weight[:sc.vocab_size].copy_(solver.model.embed_tokens.weight)
        lm.norm.load_state_dict(solver.model.norm.state_dict())
        model.lm_head.weight.copy_(solver.lm_head.weight)
        model.model.vision_model.load_state_dict(encoder.state_dict())
        for i in cross:
            lm.layers[i].cross_attn_attn_gate.zero_()
            lm.layers[i].cross_attn_mlp_gate.zero_()
    model.config.text_config._attn_implementation = solver.config._attn_implementation
    return model.eval()


def set_trainable(model, train_encoder: bool = False) -> int:
    """Freeze the language model; train the cross-attention blocks and the projector (and the
    encoder if asked). Returns the number of trainable parameters."""
    cross = set(model.config.text_config.cross_attention_layers)
    for p in model.parameters():
        p.requires_grad_(False)
    train = [model.model.multi_modal_projector]
    train += [lay for i, lay in enumerate(model.model.language_model.layers) if i in cross]
    if train_encoder:
        train.append(model.model.vision_model)
    for m in train:
        for p in m.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def gates(model) -> list[tuple[float, float]]:
    """(attention gate, MLP gate) of every cross-attention block."""
    cross = model.config.text_config.cross_attention_layers
    lay = model.model.language_model.layers
    return [(lay[i].cross_attn_attn_gate.item(), lay[i].cross_attn_mlp_gate.item()) for i in cross]


# ------------------------------------------------------------------------------ batches


def cross_mask(ids: torch.Tensor, attn: torch.Tensor, image_id: int) -> torch.Tensor:
    """(B, T, 1 image, 1 tile): a token attends to the image from the image token on (as the
    Mllama processor does); pads and earlier tokens do not."""
    is_img = (ids == image_id).long()
    return ((is_img.cumsum(1) > 0) & attn.bool()).long()[:, :, None, None]


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    return tokenizer(prompt).input_ids


def training_batch(tokenizer, items: Sequence[VisualProblem], image_id: int
                   ) -> dict[str, torch.Tensor]:
    """Right-padded prompt + solution + EOS, labels on the solution only, images."""
    rows, labels = [], []
    for v in items:
        p = encode_prompt(tokenizer, v.prompt)
        s = tokenizer(v.problem.solution, add_special_tokens=False).input_ids
        s = s + [tokenizer.eos_token_id]
        rows.append(p + s)
        labels.append([-100] * len(p) + s)
    t = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (t - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (t - len(r)) for r in labels])
    attn = torch.tensor([[1] * len(r) + [0] * (t - len(r)) for r in rows])
    pix, ar_ids, ar_mask = to_pixels([v.image for v in items])
    return {"input_ids": ids, "attention_mask": attn, "labels": lab, "pixel_values": pix,
            "aspect_ratio_ids": ar_ids, "aspect_ratio_mask": ar_mask,
            "cross_attention_mask": cross_mask(ids, attn, image_id)}


def train_adapter(model, tokenizer, train: Sequence[VisualProblem], cfg: AdapterConfig, *,
                  progress: bool = False, log=None) -> dict[str, Any]:
    """Train the adapter on visual problems (language model frozen). Returns the loss curve,
    trainable parameter count and time."""
    import random

    from tqdm import tqdm

    if not train:
        raise ValueError("no visual training problems")
    image_id = model.config.image_token_index
    n_train = set_trainable(model, cfg.train_encoder)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * max(0.1, 1 - s / max(cfg.steps, 1)))
    torch.manual_seed(cfg.seed)
    rng = random.Random(f"adapter:{cfg.seed}")
    model.train()
    losses: list[float] = []
    t0 = time.time()
    for step in tqdm(range(cfg.steps), desc="adapter", disable=not progress):
        batch = training_batch(tokenizer, rng.sample(list(train), min(cfg.batch_size, len(train))),
                               image_id)
        loss = model(**batch, use_cache=False).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log is not None and (step % 25 == 0 or step == cfg.steps - 1):
            log(step=step, stage="adapter", loss=losses[-1], gates=gates(model))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return {"losses": losses, "train_seconds": time.time() - t0, "trainable_params": n_train,
            "gates": gates(model)}


# ------------------------------------------------------------------------------ the model interface


class VisualLM(LanguageModel):
    """The project's model interface over a ``MllamaForConditionalGeneration``: prompts hold
    ``<|image|>`` where an image goes, ``images`` gives one canvas per prompt (or None for a
    prompt without an image: then the text path runs, the frozen solver's own computation)."""

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.image_id = model.config.image_token_index

    @classmethod
    def from_pretrained(cls, path: str | Path, **kw) -> "VisualLM":
        from transformers import AutoTokenizer, MllamaForConditionalGeneration

        return cls(MllamaForConditionalGeneration.from_pretrained(path),
                   AutoTokenizer.from_pretrained(path), **kw)

    def save_pretrained(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def _inputs(self, prompts: Sequence[str], images, left: bool) -> dict[str, torch.Tensor]:
        rows = [encode_prompt(self.tokenizer, p) for p in prompts]
        n_img = [r.count(self.image_id) for r in rows]
        if any(n > 1 for n in n_img):
            raise ValueError("a prompt holds more than one <|image|>; one image per prompt")
        t = max(map(len, rows))
        pad = self.tokenizer.pad_token_id
        padded = [([pad] * (t - len(r)) + r) if left else (r + [pad] * (t - len(r))) for r in rows]
        mask = [([0] * (t - len(r)) + [1] * len(r)) if left else ([1] * len(r) + [0] * (t - len(r)))
                for r in rows]
        out = {"input_ids": torch.tensor(padded), "attention_mask": torch.tensor(mask)}
        if images is not None:
            if len(images) != len(prompts):
                raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
            if any(n != 1 for n in n_img):
                raise ValueError("with images, every prompt needs exactly one <|image|>")
            pix, ar_ids, ar_mask = to_pixels(list(images))
            out.update(pixel_values=pix, aspect_ratio_ids=ar_ids, aspect_ratio_mask=ar_mask,
                       cross_attention_mask=cross_mask(out["input_ids"], out["attention_mask"],
                                                       self.image_id))
        return out

    def _logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-token logits at the last position of every (left-padded) row."""
        attn = inputs["attention_mask"]
        pos = (attn.cumsum(1) - 1).clamp(min=0)
        return self.model(**inputs, position_ids=pos, use_cache=False, logits_to_keep=1).logits[:, -1]

    def _greedy_or_sample(self, inputs, max_new_tokens: int, temperature: float, top_p: float):
        """Decode by full re-encoding each step (no cache: the models are tiny, and the
        cross-attention mask simply grows with the text). Rows that ended keep emitting pads."""
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        inputs = dict(inputs)
        done = torch.zeros(inputs["input_ids"].shape[0], dtype=torch.bool)
        for _ in range(max_new_tokens):
            logits = self._logits(inputs).float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, -1)
                sp, si = probs.sort(-1, descending=True)
                keep = sp.cumsum(-1) - sp < top_p
                sp = sp * keep
                nxt = si.gather(1, torch.multinomial(sp / sp.sum(-1, keepdim=True), 1))[:, 0]
            else:
                nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            ids = torch.cat([inputs["input_ids"], nxt[:, None]], 1)
            attn = torch.cat([inputs["attention_mask"], (~done).long()[:, None]], 1)
            inputs["input_ids"], inputs["attention_mask"] = ids, attn
            if "cross_attention_mask" in inputs:
                cm = inputs["cross_attention_mask"]
                inputs["cross_attention_mask"] = torch.cat([cm, cm[:, -1:] * (~done).long()[:, None, None, None]], 1)
            done |= nxt == eos
            if bool(done.all()):
                break
        return inputs["input_ids"]

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 128,
                 temperature: float = 0.0, top_p: float = 1.0,
                 stop: Sequence[str] | None = None, seed: int | None = None,
                 images: Sequence[Any] | None = None) -> list[Generation]:
        out: list[Generation] = []
        eos = self.tokenizer.eos_token_id
        for i in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[i:i + self.batch_size])
            imgs = None if images is None else list(images[i:i + self.batch_size])
            inputs = self._inputs(chunk, imgs, left=True)
            if seed is not None:
                torch.manual_seed(seed + i)
            seqs = self._greedy_or_sample(inputs, max_new_tokens, temperature, top_p)
            new = seqs[:, inputs["input_ids"].shape[1]:].tolist()
            for ids in new:
                reason = "length"
                if eos in ids:
                    ids, reason = ids[:ids.index(eos)], "stop"
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                stop_hit = None
                for s in stop or ():
                    if s in text:
                        text, reason, stop_hit = text[:text.index(s)], "stop", s
                out.append(Generation(text=text, token_ids=ids, finish_reason=reason,
                                      stop_reason=stop_hit if stop_hit else (eos if reason == "stop" else None)))
        return out

    @torch.no_grad()
    def score(self, prompts: Sequence[str], continuations: Sequence[str], *,
              images: Sequence[Any] | None = None) -> list[ScoredContinuation]:
        out = []
        for j, (p, c) in enumerate(zip(prompts, continuations)):
            inputs = self._inputs([p + c], None if images is None else [images[j]], left=False)
            n_p = len(encode_prompt(self.tokenizer, p))
            logits = self.model(**inputs, use_cache=False).logits[0].float()
            ids = inputs["input_ids"][0]
            lp = torch.log_softmax(logits[:-1], -1).gather(1, ids[1:, None])[:, 0]
            cont = ids[n_p:].tolist()
            vals = lp[n_p - 1:].tolist()
            out.append(ScoredContinuation(cont, vals, [True] * len(cont)))
        return out

    def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True
                            ) -> str:
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)
