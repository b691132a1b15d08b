"""Device selection and mixed precision, shared by every training/scoring step."""

from __future__ import annotations

import contextlib
import logging
import os

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


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read(1 << 16)
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def cpu_has_amx() -> bool:
    """True on CPUs with AMX bf16 tiles (oneDNN then runs bf16 convolutions fast)."""
    return "amx_bf16" in _cpu_flags()


def cpu_has_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions: AMX tiles or AVX-512 BF16 (Zen 4,
    Cooper Lake and later). On the AVX-512 BF16 development CPU (no AMX) bf16 autocast
    trains the student 1.5-1.75x faster than fp32 (docs/performance.md)."""
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())


def amp_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` (auto | fp32 | bf16 | fp16) on ``device``.

    ``auto`` means bf16 on CUDA GPUs that support it and on CPUs with bf16 instructions
    (AMX or AVX-512 BF16, :func:`cpu_has_bf16`), else fp32
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
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast_to(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device`` (a no-op context when dtype is None)."""
    if dtype is None or device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def set_threads(threads: int | None, max_threads: int | None = None) -> None:
    """Use ``threads`` intra-op threads (the job's Snakemake threads). With ``max_threads``
    above ``threads`` the count is elastic: :func:`adjust_threads` (called at every training
    epoch) grows it into the cores nobody else is using, up to ``max_threads``."""
    global _ELASTIC
    if threads:
        torch.set_num_threads(int(threads))
    _ELASTIC = ElasticThreads(int(threads), int(max_threads)) if threads and max_threads and int(max_threads) > int(threads) else None  # fmt: skip


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat (Linux)."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class ElasticThreads:
    """The job's threads plus the cores other processes leave idle, re-read on each call.

    On 2 cores a 2-thread training job waits until both cores are free at once, which starves
    the critical path behind the many one-thread jobs; so long jobs ask the scheduler for
    ``base`` threads and grow here, every ~30 s of training, into whatever the machine does not use.
    Other processes' load = the machine's busy cores (``/proc/stat``) minus this process's own
    CPU time over the same interval; the first call, with no interval yet, reads the 1-minute
    load average instead. Thread counts change the order CPU kernels sum in, so runs that must
    be bit-for-bit reproducible keep a fixed count (no ``max_threads``)."""

    def __init__(self, base: int, most: int):
        self.base, self.most = max(1, base), max(1, base, most)
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # fmt: skip
        self._last: tuple[float, float, float] | None = None

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            busy, total = _cpu_times()
        except (OSError, ValueError, IndexError):
            return None
        own = sum(os.times()[:2])  # user + system seconds of this process (all its threads)
        return busy, total, own

    def others_busy(self) -> float:
        """Cores other processes kept busy since the previous call."""
        now, last = self._sample(), self._last
        self._last = now
        if now is None or last is None or now[1] <= last[1]:
            return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        span = now[1] - last[1]  # jiffies summed over all cores
        busy_cores = (now[0] - last[0]) / span * self.cores
        own_cores = (now[2] - last[2]) * tick / span * self.cores
        return max(0.0, busy_cores - own_cores)

    def threads(self) -> int:
        free = self.cores - self.others_busy()
        return int(min(self.most, self.cores, max(self.base, round(free))))

    def adjust(self) -> int:
        n = self.threads()
        if n != torch.get_num_threads():
            log.info(
                "elastic threads: %d -> %d (of %d cores)", torch.get_num_threads(), n, self.cores
            )
            torch.set_num_threads(n)
        return n


_ELASTIC: ElasticThreads | None = None


def adjust_threads() -> int:
    """Re-read the idle cores and set the thread count (elastic jobs only); the count in use."""
    return _ELASTIC.adjust() if _ELASTIC is not None else torch.get_num_threads()


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
