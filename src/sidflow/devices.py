"""Device selection and mixed precision, shared by every training/scoring step."""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; ``cuda:1`` etc. are honoured if present."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(preference)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {preference!r} requested but CUDA is not available")
    return dev


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (when supported); a no-op context elsewhere."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_has_amx() -> bool:
    """True on CPUs with AMX bf16 tiles (oneDNN then runs bf16 convolutions fast)."""
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read(1 << 16)
    except OSError:
        return False


def amp_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` (auto | fp32 | bf16 | fp16) on ``device``.

    ``auto`` means bf16 on CUDA GPUs that support it and on CPUs with AMX, else fp32
    (None). Explicit ``bf16``/``fp16`` are honoured (fp16 only on CUDA)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 autocast needs a CUDA device; use bf16 or fp32")
        return torch.float16
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r} (auto, fp32, bf16, fp16)")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and cpu_has_amx():
        return torch.bfloat16
    return None


def autocast_to(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device`` (a no-op context when dtype is None)."""
    if dtype is None or device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def reset_peak_memory(device: torch.device) -> None:
    """Start a peak-memory measurement (CUDA: the allocator's peak; CPU: nothing to reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far in MiB: the CUDA allocator's peak on a GPU, else the process's peak
    resident set size (everything the process held, data included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (
        peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    )  # bytes on macOS, KiB on Linux


def parameter_counts(model: torch.nn.Module) -> dict:
    """``trainable_params`` and ``total_params`` of a model (LoRA: the adapters only train)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": int(trainable), "total_params": int(total)}
