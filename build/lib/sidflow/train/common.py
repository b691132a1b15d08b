"""Pieces shared by the training loops: class-balanced sampling and the LR schedule.

Every class-balanced draw in sidflow goes through :func:`class_draws`. Its three modes keep
each caller's random draws exactly as they were (so trained models and the demo's metrics
do not move): ``cycle`` for the per-epoch order of the student and RINE
(:func:`balanced_epoch`), ``replace`` for the teacher fine-tune (:func:`balanced_resample`)
and ``once`` for the probe grid's capped training subset (:func:`balanced_subset`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _both_classes(labels: Sequence[int]) -> np.ndarray:
    y = np.asarray(labels)
    counts = np.bincount(y, minlength=2)
    if (counts[:2] == 0).any():
        raise ValueError(
            f"training data needs both classes; got counts {counts.tolist()} (real, fake)"
        )
    return y


def class_draws(
    labels: Sequence[int], rng: np.random.Generator, per_class: int, mode: str = "cycle"
) -> list[np.ndarray]:
    """Positions of ``per_class`` class-0 items, then of ``per_class`` class-1 items.

    ``cycle``: fresh permutations of the class one after another (without replacement until
    the class is used up); ``once``: one permutation, cut (a smaller class gives all it has);
    ``replace``: independent draws with replacement."""
    y = np.asarray(labels)
    parts = []
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        if mode == "replace":
            parts.append(rng.choice(idx, per_class, replace=True))
            continue
        reps = -(-per_class // len(idx)) if mode == "cycle" else 1
        parts.append(np.concatenate([rng.permutation(idx) for _ in range(reps)])[:per_class])
    return parts


def balanced_epoch(labels: Sequence[int], seed: int, epoch: int) -> np.ndarray:
    """Indices for one epoch: half real, half fake, each class drawn without replacement
    (cycled when it is the minority), shuffled. Depends only on (seed, epoch), so a
    resumed run replays the same order."""
    y = _both_classes(labels)
    rng = np.random.default_rng([seed, epoch])
    order = np.concatenate(class_draws(y, rng, (len(y) + 1) // 2, "cycle"))
    return order[rng.permutation(len(order))]


def balanced_resample(labels: Sequence[int], seed: int) -> np.ndarray:
    """Indices resampled with replacement so that both classes appear equally often (same
    total length, rounded down to even), shuffled (the teacher fine-tune's training set)."""
    y = _both_classes(labels)
    rng = np.random.default_rng(seed)
    return rng.permutation(np.concatenate(class_draws(y, rng, len(y) // 2, "replace")))


def balanced_subset(idx: np.ndarray, labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Class-balanced random subset of ``idx`` with at most ``cap`` rows (0 = all), sorted
    (the probe grid's training rows; ``labels`` is indexed by the values of ``idx``)."""
    if cap <= 0 or len(idx) <= cap:
        return idx
    rng = np.random.default_rng(seed)
    return np.sort(idx[np.concatenate(class_draws(labels[idx], rng, cap // 2, "once"))])


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
