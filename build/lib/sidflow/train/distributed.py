"""Data-parallel training with ``torchrun`` (DDP): NCCL on GPUs, gloo on CPU.

    torchrun --standalone --nproc_per_node 4 -m sidflow.cli train-student --spec spec.json

Every rank draws the same epoch order from the seed and keeps every ``world``-th
batch element, so the global batch is the configured ``batch_size``. Only rank 0
writes checkpoints and the final model.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: torch.device) -> torch.device:
    """Join the process group when started by torchrun; returns this rank's device."""
    rank, size, local = world()
    if size == 1:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    log.info("DDP rank %d/%d on %s", rank, size, device)
    return device


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
