"""``torchrun`` support: process groups, DDP / FSDP2 wrapping and full state dicts.

The same training entry point runs alone or under ``torchrun --nproc_per_node=N``; gloo on CPU,
nccl on GPU. Checkpoints are always full (unsharded) HF-compatible state dicts, so a model trained
with FSDP2 loads with plain ``from_pretrained``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

MODES = ("auto", "none", "ddp", "fsdp")


@dataclass
class DistInfo:
    mode: str  # "none" | "ddp" | "fsdp"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(mode: str, device_pref: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    from reasonlab.device import pick_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    # One process runs unwrapped, except FSDP2 asked for explicitly under torchrun (one device).
    one_device_fsdp = world == 1 and mode == "fsdp" and "RANK" in os.environ
    if mode == "none" or (world <= 1 and not one_device_fsdp):
        return DistInfo("none"), pick_device(device_pref)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo("ddp" if mode == "auto" else mode, rank, world, local_rank), device


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """DDP, or FSDP2 (``fully_shard`` per decoder layer, then the root), or the model itself."""
    if info.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if info.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (gathered) model state dict; a collective under FSDP (call on every rank)."""
    return get_model_state_dict(model, options=_FULL)


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    return get_optimizer_state_dict(model, optimizer, options=_FULL)


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    model_state: dict, optim_state: dict | None) -> None:
    """Load full state dicts into a (possibly wrapped/sharded) model and its optimizer."""
    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=opts)
    if optimizer is not None and optim_state is not None:
        set_optimizer_state_dict(model, optimizer, optim_state, options=opts)


def all_reduce_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.world_size > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
