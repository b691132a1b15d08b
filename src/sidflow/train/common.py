"""Pieces shared by the training loops: balanced epochs, thresholds, the LR schedule."""

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


def calibrate_threshold(labels: Sequence[int], p_fake: Sequence[float]) -> float:
    """The p_fake threshold maximising balanced accuracy on *validation* data.

    Ties go to the threshold closest to 0.5. Predict fake when ``p_fake >= threshold``.
    """
    y = np.asarray(labels, dtype=int)
    p = np.asarray(p_fake, dtype=float)
    if len(np.unique(y)) < 2:
        raise ValueError("threshold calibration needs validation images of both classes")
    candidates = np.unique(np.concatenate([p, [0.5]]))
    # midpoints between consecutive scores generalise better than the scores themselves
    mids = np.concatenate(
        [[candidates[0]], (candidates[1:] + candidates[:-1]) / 2, [np.nextafter(candidates[-1], 2)]]
    )
    # balanced accuracy at every candidate in O(n log n): counts from sorted scores
    fake, real = np.sort(p[y == 1]), np.sort(p[y == 0])
    tpr = 1.0 - np.searchsorted(fake, mids, side="left") / len(fake)  # share of fakes with p >= t
    tnr = np.searchsorted(real, mids, side="left") / len(real)  # share of reals with p < t
    bacc = 0.5 * (tpr + tnr)
    near_best = np.flatnonzero(bacc >= bacc.max() - 1e-12)
    return float(mids[near_best[np.argmin(np.abs(mids[near_best] - 0.5))]])


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
