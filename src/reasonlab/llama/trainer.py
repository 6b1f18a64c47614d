"""The causal-LM training loop shared by pretraining and SFT (Llama 3 recipe, arXiv:2407.21783).

AdamW, linear warmup + cosine decay, gradient clipping, a batch-size ramp by tokens seen (gradient
accumulation over micro-batches), packed sequences with document masking, periodic evaluation,
safetensors checkpoints that resume exactly, and DDP / FSDP2 under ``torchrun``.

Model FLOPs utilization (MFU) follows PaLM (arXiv:2204.02311, appendix B) and torchtitan's
``get_num_flop_per_token``: per trained token ``6N + 12·L·H·Q·T`` with N the parameters that take
part in matmuls (all but the input embedding table), L layers, H heads, Q head dim, T the sequence
length; its rate is divided by a matmul peak measured on the same device, at the same thread count
and dtype, in the same process (:func:`matmul_peak_flops`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from reasonlab.config import ConfigError, check_choice, check_order, check_range
from reasonlab.device import PRECISIONS, autocast, uses_bf16
from reasonlab.llama import distributed as D
from reasonlab.lm.checkpoint import quiet_transformers, verify_manifest, write_manifest
from reasonlab.lm.portable import make_portable
from reasonlab.llama.packing import (
    PackedSequences,
    document_attention_mask,
    loss_targets,
    needs_document_mask,
    position_ids_from_docs,
)
from reasonlab.llama.schedules import batch_size_at, warmup_cosine_lr
from reasonlab.runs import Run, atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (defaults: a tiny model on a CPU in minutes)."""

    preset: str = "tiny-2m"
    init_from: str | None = None  # HF model directory to start from (SFT, continued training)
    rope_theta: float | None = None  # a fresh model's RoPE base (None: Llama 3's 500,000)
    seq_len: int = 256
    batch_size: int = 32  # sequences per optimizer step (all ranks, all micro-batches)
    micro_batch_size: int = 0  # sequences per forward pass and rank; 0 = no accumulation
    batch_ramp: list[list[int]] = field(default_factory=list)  # [[tokens_seen, batch_size], ...]
    max_steps: int = 500
    lr: float | None = None  # peak LR; None = the preset's
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    decay_steps: int = 0  # the cosine reaches its floor here and holds it (0 = at max_steps)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    device: str = "auto"
    distributed: str = "auto"
    threads: int = 1  # torch CPU threads for the run (0 = torch's default); one is fastest on a busy machine
    precision: str = "auto"  # auto (bf16 autocast on GPUs with bf16) | fp32 | bf16 (also on CPUs)
    seed: int = 0

    def __post_init__(self) -> None:
        from reasonlab.device import check_device
        from reasonlab.llama.configs import known_presets

        if str(self.preset).lower() not in known_presets():
            raise ConfigError(f"config key 'preset': unknown preset {self.preset!r}; "
                              f"known presets: {', '.join(known_presets())}")
        check_device("device", self.device)
        check_range("seq_len", self.seq_len, 2, 1 << 20)
        if self.rope_theta is not None:
            check_range("rope_theta", self.rope_theta, 1.0, 1e9)
        check_range("batch_size", self.batch_size, 1)
        check_range("micro_batch_size", self.micro_batch_size, 0)
        check_range("max_steps", self.max_steps, 1)
        if self.lr is not None:
            check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_range("warmup_steps", self.warmup_steps, 0)
        check_order("warmup_steps", self.warmup_steps, "max_steps", self.max_steps)
        check_range("decay_steps", self.decay_steps, 0)
        if self.decay_steps:
            check_order("warmup_steps", self.warmup_steps, "decay_steps", self.decay_steps)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_range("beta1", self.beta1, 0.0, 1.0)
        check_range("beta2", self.beta2, 0.0, 1.0)
        check_range("grad_clip", self.grad_clip, 0.0)
        check_range("eval_every", self.eval_every, 1)
        check_range("eval_batches", self.eval_batches, 1)
        check_range("checkpoint_every", self.checkpoint_every, 1)
        check_range("keep_checkpoints", self.keep_checkpoints, 1)
        check_range("log_every", self.log_every, 1)
        check_range("threads", self.threads, 0, 1024)
        check_choice("distributed", self.distributed, D.MODES)
        check_choice("precision", self.precision, PRECISIONS)
        for i, r in enumerate(self.batch_ramp):
            if len(r) != 2 or r[0] < 0 or r[1] < 1:
                raise ConfigError(f"config key 'batch_ramp[{i}]' = {r!r} must be [tokens_seen>=0, batch_size>=1]")
            if self.micro_batch_size and r[1] % self.micro_batch_size:
                raise ConfigError(
                    f"config key 'batch_ramp[{i}]' batch size {r[1]} is not a multiple of config key "
                    f"'micro_batch_size' = {self.micro_batch_size}")
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ConfigError(f"config key 'batch_size' = {self.batch_size} is not a multiple of "
                              f"config key 'micro_batch_size' = {self.micro_batch_size}")

    def peak_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        from reasonlab.llama.configs import peak_lr

        return peak_lr(self.preset)


@dataclass
class TrainState:
    step: int = 0
    cursor: int = 0  # sequences consumed from the shuffled stream (of the current stage)
    tokens_seen: int = 0  # target tokens trained on
    stage: int = 0  # staged runs: the stage the cursor belongs to
    streams: dict = field(default_factory=dict)  # staged runs: data stream -> tokens used by past stages


def batch_inputs(batch: PackedSequences, device: torch.device, dtype: torch.dtype = torch.float32) -> dict:
    """Model inputs for a packed batch: ids, restarting positions and the document mask."""
    ids = batch.input_ids.to(device)
    doc = batch.doc_ids.to(device)
    inputs = {"input_ids": ids, "position_ids": position_ids_from_docs(doc)}
    if needs_document_mask(doc):
        inputs["attention_mask"] = document_attention_mask(doc, dtype)
    return inputs


def token_losses(model: torch.nn.Module, batch: PackedSequences, device: torch.device,
                 precision: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of next-token cross-entropy over target tokens, and their count (the logits cast to
    fp32 under any ``precision``)."""
    with autocast(device, precision=precision):
        logits = model(**batch_inputs(batch, device)).logits
    targets, mask = loss_targets(batch)
    targets, mask = targets.to(device), mask.to(device)
    ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                         reduction="none").view_as(targets)
    return (ce * mask).sum(), mask.sum()


def stream_indices(n: int, start: int, count: int, seed: int) -> list[int]:
    """Indices ``start .. start+count`` of an endless stream of per-epoch shuffles of ``range(n)``."""
    out: list[int] = []
    pos = start
    while len(out) < count:
        epoch, offset = divmod(pos, n)
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g)
        take = min(count - len(out), n - offset)
        out += perm[offset:offset + take].tolist()
        pos += take
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: PackedSequences, device: torch.device, micro: int,
             max_batches: int, precision: str = "auto") -> float:
    """Token-weighted mean validation loss over the first ``max_batches`` micro-batches."""
    model.eval()
    total, count = torch.zeros((), device=device), torch.zeros((), device=device)
    for b in range(min(max_batches, math.ceil(len(data) / micro))):
        s, c = token_losses(model, data.select(range(b * micro, min(len(data), (b + 1) * micro))), device,
                            precision)
        total += s
        count += c
    model.train()
    return (total / count.clamp(min=1)).item()


def model_flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token, ``6N + 12·L·H·Q·T`` (forward + backward; PaLM appendix B).

    N counts every parameter except the input embedding table (a lookup, not a matmul); the
    attention term counts the score and value matmuls over the full ``seq_len`` window."""
    n = sum(p.numel() for p in model.parameters())
    emb = getattr(model, "get_input_embeddings", lambda: None)()
    if emb is not None and getattr(emb, "weight", None) is not None:
        out = getattr(model, "get_output_embeddings", lambda: None)()
        tied = out is not None and out.weight is emb.weight
        if not tied:
            n -= emb.weight.numel()
    config = getattr(model, "config", None)
    attn = 0.0
    if config is not None and hasattr(config, "num_hidden_layers"):
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        attn = 12.0 * config.num_hidden_layers * heads * head_dim * seq_len
    return 6.0 * n + attn


_PEAKS: dict[tuple, float] = {}


def matmul_peak_flops(device: torch.device, dtype: torch.dtype | None = None, *, size: int | None = None,
                      reps: int = 5, min_seconds: float = 0.2, fresh: bool = False) -> float:
    """The best FLOP/s of a square matmul on ``device`` at the current thread count: at least
    ``reps`` timed products and ``min_seconds`` of them, after a warm-up. Cached per process
    (device, dtype, threads, size); ``fresh`` measures again and keeps the higher figure (a busy
    machine only ever lowers a measurement)."""
    device = torch.device(device)
    if dtype is None:
        from reasonlab.device import supports_bf16

        dtype = torch.bfloat16 if supports_bf16(device) else torch.float32
    n = size or (8192 if device.type == "cuda" else 1024)
    key = (str(device), dtype, torch.get_num_threads(), n)
    if fresh or key not in _PEAKS:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        torch.mm(a, b)  # warm-up
        best, spent, i = float("inf"), 0.0, 0
        while i < reps or spent < min_seconds:
            sync()
            t = time.perf_counter()
            torch.mm(a, b)
            sync()
            dt = time.perf_counter() - t
            best, spent, i = min(best, dt), spent + dt, i + 1
        _PEAKS[key] = max(_PEAKS.get(key, 0.0), 2.0 * n ** 3 / max(best, 1e-12))
    return _PEAKS[key]


class Trainer:
    """Trains ``model`` on packed sequences into the run directory ``run``."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, train: PackedSequences,
                 val: PackedSequences | None, run: Run | None, *,
                 on_step: Callable[[TrainState], None] | None = None):
        self.cfg = cfg
        self.info, self.device = D.init_distributed(cfg.distributed, cfg.device)
        self.raw_model = model.to(self.device)
        self.model = D.wrap_model(self.raw_model, self.info, self.device)
        self.train_data, self.val_data = train, val
        self.run = run
        self.on_step = on_step
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.peak_lr(), betas=(cfg.beta1, cfg.beta2), foreach=True)
        self.state = TrainState()
        self.ckpt_root = run.checkpoint_dir if run is not None else None
        self.flops_per_token = model_flops_per_token(self.raw_model, cfg.seq_len)
        self.peak_flops: float | None = None

    # -- checkpoints ---------------------------------------------------------------------------
    def latest_checkpoint(self) -> Path | None:
        if self.ckpt_root is None:
            return None
        done = sorted((p for p in self.ckpt_root.glob("step_*") if (p / "state.json").exists()),
                      key=lambda p: int(p.name.split("_")[1]))
        return done[-1] if done else None

    def save_checkpoint(self) -> None:
        model_sd = D.full_model_state(self.model)
        optim_sd = D.full_optimizer_state(self.model, self.optimizer)
        if not self.info.is_main or self.ckpt_root is None:
            D.barrier(self.info)
            return
        final = self.ckpt_root / f"step_{self.state.step:07d}"
        tmp = self.ckpt_root / f".tmp_step_{self.state.step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in model_sd.items()}, str(tmp / "model.safetensors"))
        torch.save(optim_sd, tmp / "optimizer.pt")
        atomic_write_json(tmp / "state.json", dict(self.state.__dict__))
        write_manifest(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)  # the checkpoint exists only once complete
        done = sorted(self.ckpt_root.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        for old in done[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        D.barrier(self.info)

    def load_checkpoint(self, path: Path) -> None:
        verify_manifest(path)  # a damaged checkpoint fails naming its file
        model_sd = load_file(str(path / "model.safetensors"))
        optim_sd = torch.load(path / "optimizer.pt", weights_only=True)
        D.load_full_state(self.model, self.optimizer, model_sd, optim_sd)
        st = json.loads((path / "state.json").read_text())
        known = {f for f in TrainState.__dataclass_fields__}
        self.state = TrainState(**{k: v for k, v in st.items() if k in known})
        log.info("resumed from %s (step %d)", path, self.state.step)

    # -- training -----------------------------------------------------------------------------
    def _micro_size(self, batch: int) -> int:
        per_rank = batch // self.info.world_size
        if per_rank * self.info.world_size != batch:
            raise ConfigError(f"batch size {batch} is not divisible by world size {self.info.world_size}")
        micro = self.cfg.micro_batch_size or per_rank
        if per_rank % micro:
            raise ConfigError(f"batch size per rank {per_rank} is not divisible by micro_batch_size {micro}")
        return micro

    def batch_indices(self, batch_size: int) -> list[int]:
        """Rows of ``train_data`` for the next step: the seeded per-epoch shuffle from the cursor."""
        return stream_indices(len(self.train_data), self.state.cursor, batch_size, self.cfg.seed)

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step``: linear warmup, cosine decay over ``decay_steps`` (or
        ``max_steps``), then the floor."""
        cfg = self.cfg
        return warmup_cosine_lr(step, peak_lr=cfg.peak_lr(), warmup_steps=cfg.warmup_steps,
                                total_steps=cfg.decay_steps or cfg.max_steps,
                                min_lr_ratio=cfg.min_lr_ratio)

    def prepare_step(self) -> None:
        """Called before every step (after a resume too): a staged trainer switches data here."""

    def after_step(self) -> None:
        """Called after every step, before its checkpoint (a staged trainer keeps snapshots)."""

    def train_step(self) -> dict[str, float]:
        cfg, info = self.cfg, self.info
        batch_size = batch_size_at(self.state.tokens_seen, cfg.batch_size, cfg.batch_ramp)
        micro = self._micro_size(batch_size)
        idx = self.batch_indices(batch_size)
        per_rank = batch_size // info.world_size
        mine = self.train_data.select(idx[info.rank * per_rank:(info.rank + 1) * per_rank])
        # Normalize by the global number of target tokens, so accumulation and ranks are exact.
        n_local = loss_targets(mine)[1].sum()
        n_global = D.all_reduce_sum(n_local.to(self.device, torch.float32), info)
        lr = self.lr_at(self.state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        n_micro = per_rank // micro
        for m in range(n_micro):
            part = mine.select(range(m * micro, (m + 1) * micro))
            sync = m == n_micro - 1
            ctx = self.model.no_sync() if (info.mode == "ddp" and not sync) else _null()
            if info.mode == "fsdp":
                self.model.set_requires_gradient_sync(sync)
            with ctx:
                s, _ = token_losses(self.model, part, self.device, cfg.precision)
                (s * info.world_size / n_global.clamp(min=1)).backward()
            loss_sum += s.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                   cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = D.all_reduce_sum(loss_sum, info) / n_global.clamp(min=1)
        self.state.step += 1
        self.state.cursor += batch_size
        self.state.tokens_seen += int(n_global.item())
        return {"loss": loss.item(), "lr": lr, "grad_norm": float(grad_norm), "batch_size": batch_size}

    def _compute_dtype(self) -> torch.dtype:
        """The dtype the matmuls run in (the MFU's peak is measured in it)."""
        return torch.bfloat16 if uses_bf16(self.device, self.cfg.precision) else torch.float32

    def fit(self) -> dict[str, float]:
        """Train to ``max_steps`` (resuming from the latest checkpoint) with ``cfg.threads`` threads."""
        from reasonlab.device import torch_threads

        with torch_threads(self.cfg.threads):
            return self._fit()

    def _fit(self) -> dict[str, float]:
        cfg, info = self.cfg, self.info
        if self.peak_flops is None:
            self.peak_flops = matmul_peak_flops(self.device, self._compute_dtype())
        ckpt = self.latest_checkpoint()
        if ckpt is not None:
            self.load_checkpoint(ckpt)
            if self.run is not None and info.is_main:
                self.run.truncate_metrics(self.state.step)
        self.model.train()
        micro_eval = self.cfg.micro_batch_size or max(1, cfg.batch_size // info.world_size)
        bar = tqdm(total=cfg.max_steps, initial=self.state.step, desc="train", disable=not info.is_main,
                   dynamic_ncols=True)
        t0, tok0 = time.time(), self.state.tokens_seen
        last: dict[str, float] = {}
        while self.state.step < cfg.max_steps:
            self.prepare_step()
            last = self.train_step()
            bar.update(1)
            step = self.state.step
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                dt = max(time.time() - t0, 1e-9)
                last["tokens_per_s"] = (self.state.tokens_seen - tok0) / dt
                if step == cfg.max_steps:  # the peak once more, after the run (load varies)
                    self.peak_flops = matmul_peak_flops(self.device, self._compute_dtype(), fresh=True)
                last["model_flops_per_s"] = last["tokens_per_s"] * self.flops_per_token
                last["mfu"] = last["model_flops_per_s"] / (self.peak_flops * info.world_size)
                bar.set_postfix(loss=f"{last['loss']:.3f}", lr=f"{last['lr']:.2e}")
                if self.run is not None and info.is_main:
                    self.run.log(step=step, tokens_seen=self.state.tokens_seen, **last)
            if self.val_data is not None and (step % cfg.eval_every == 0 or step == cfg.max_steps):
                val = evaluate(self.model, self.val_data, self.device, micro_eval, cfg.eval_batches,
                               cfg.precision)
                last["val_loss"] = val
                if self.run is not None and info.is_main:
                    self.run.log(step=step, val_loss=val)
            self.after_step()
            if self.ckpt_root is not None and (step % cfg.checkpoint_every == 0 or step == cfg.max_steps):
                self.save_checkpoint()
            if self.on_step is not None:
                self.on_step(self.state)
        bar.close()
        return {**last, "steps": self.state.step, "tokens_seen": self.state.tokens_seen}

    def save_model(self, out_dir: Path, tokenizer=None) -> None:
        """Save the final model as an HF directory (safetensors), with the tokenizer if given."""
        state = D.full_model_state(self.model)
        if self.info.is_main:
            with quiet_transformers():
                self.raw_model.save_pretrained(str(out_dir), state_dict=state, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(out_dir))
            make_portable(out_dir)  # readable by transformers 4.x too
            write_manifest(out_dir)
        D.barrier(self.info)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
