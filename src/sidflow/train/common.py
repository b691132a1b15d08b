"""Pieces shared by the training loops: balanced epochs and the LR schedule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def balanced_epoch(labels: Sequence[int], seed: int, epoch: int) -> np.ndarray:
    """Indices for one epoch: half real, half fake, each class drawn without replacement
    (cycled when it is the minority), shuffled. Depends only on (seed, epoch), so a
    resumed run replays the same order."""
    y = np.asarray(labels)
    counts = np.bincount(y, minlength=2)
    if (counts[:2] == 0).any():
        raise ValueError(
            f"training data needs both classes; got counts {counts.tolist()} (real, fake)"
        )
    rng = np.random.default_rng([seed, epoch])
    half = (len(y) + 1) // 2
    parts = []
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        reps = -(-half // len(idx))
        parts.append(np.concatenate([rng.permutation(idx) for _ in range(reps)])[:half])
    order = np.concatenate(parts)
    return order[rng.permutation(len(order))]


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_frac: float = 0.1):
    """Linear warm-up then cosine decay to zero; works for any number of steps (even 1)."""
    import math

    total = max(1, int(total_steps))
    warmup = max(1, int(round(total * warmup_frac)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
