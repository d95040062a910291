"""Training on several processes (GPUs, nodes) under ``torchrun``, with DistributedDataParallel.

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK; ``process_group`` joins its group (NCCL when
training on CUDA, gloo otherwise). Without ``torchrun`` there is no group: one process is rank 0
of a world of size 1, and every helper here does nothing.

>>> rank(), world_size(), is_main_process()
(0, 1, True)
>>> mean(2.5, torch.device("cpu"))
2.5
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from ..inference import resolve_device


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 alone writes checkpoints, logs and best weights, and validates."""
    return rank() == 0


def local_device(name: str = "auto") -> torch.device:
    """The device of this process: with several processes on CUDA, the GPU of its local rank."""
    device = resolve_device(name)
    if device.type == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextmanager
def process_group(device: str = "auto") -> Iterator[None]:
    """Join torchrun's process group for the duration of the block; without torchrun, do nothing."""
    if not launched_by_torchrun() or dist.is_initialized():
        yield
        return
    target = local_device(device)
    if target.type == "cuda":
        torch.cuda.set_device(target)
        dist.init_process_group("nccl", device_id=target)
    else:
        dist.init_process_group("gloo")
    try:
        yield
        # A rank that tears its connections down while another still uses them can make gloo's
        # worker thread abort the other rank ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean(value: float, device: torch.device) -> float:
    """The mean of ``value`` over all processes (``device`` must suit the backend: CUDA for NCCL)."""
    if not dist.is_initialized():
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item() / world_size()
