"""Bootstrap intervals for accuracy and AP, and paired detector comparisons.

    ci = bootstrap_ci(y, p, threshold)                 # {"accuracy_ci": (lo, hi), "ap_ci": (lo, hi)}
    d = paired_difference(y, p_kd, p_base, t_kd, t_base)   # KD minus baseline, same images

Resampling is done with multinomial weights over the *sorted* scores, so one sort
serves every resample and AP is computed for a whole block of resamples at once
(same definition as scikit-learn's ``average_precision_score``, ties grouped).
A resample without both classes is skipped (its AP is undefined).
"""

from __future__ import annotations

import numpy as np

N_BOOT = 1000
BLOCK = 100


def _sorted_groups(p: np.ndarray):
    order = np.argsort(-p, kind="mergesort")
    ps = p[order]
    ends = np.flatnonzero(np.r_[ps[1:] != ps[:-1], True])  # last index of each tied group
    return order, ends


def weighted_ap(y_sorted: np.ndarray, w: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """AP for each row of weights ``w`` (B x n) over scores sorted descending."""
    tp = np.cumsum(w * y_sorted, axis=1)[:, ends]
    fp = np.cumsum(w * (1 - y_sorted), axis=1)[:, ends]
    pos = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        recall = tp / pos
    d_recall = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
    return (d_recall * precision).sum(1)


def _weights(rng, n: int, b: int) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)


def bootstrap_ci(
    y, p, threshold: float, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
) -> dict:
    """Percentile intervals for accuracy (at ``threshold``) and AP; None where undefined."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    out = {"accuracy_ci": None, "ap_ci": None}
    if len(y) < 2:
        return out
    rng = np.random.default_rng(seed)
    order, ends = _sorted_groups(p)
    ys = y[order]
    correct = ((p[order] >= threshold) == (ys == 1)).astype(float)
    accs, aps = [], []
    for start in range(0, n_boot, BLOCK):
        w = _weights(rng, len(y), min(BLOCK, n_boot - start))
        accs.append((w * correct).sum(1) / len(y))
        both = ((w * ys).sum(1) > 0) & ((w * (1 - ys)).sum(1) > 0)
        if both.any():
            aps.append(weighted_ap(ys, w[both], ends))
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    out["accuracy_ci"] = tuple(float(v) for v in np.percentile(np.concatenate(accs), q))
    if aps and (y == 1).any() and (y == 0).any():
        out["ap_ci"] = tuple(float(v) for v in np.percentile(np.concatenate(aps), q))
    return out


def paired_difference(y, p_a, p_b, threshold_a: float, threshold_b: float, n_boot: int = N_BOOT,
                      seed: int = 0, level: float = 0.95) -> dict:  # fmt: skip
    """Detector A minus detector B on the *same* images: accuracy and AP differences with
    paired-bootstrap intervals (each resample draws images, both detectors score them)."""
    y = np.asarray(y, dtype=float)
    p_a, p_b = np.asarray(p_a, dtype=float), np.asarray(p_b, dtype=float)
    if not (len(y) == len(p_a) == len(p_b)) or len(y) < 2:
        raise ValueError("paired comparison needs two score vectors over the same images")
    if not ((y == 1).any() and (y == 0).any()):
        raise ValueError("paired comparison needs real and fake images")
    rng = np.random.default_rng(seed)
    oa, ea = _sorted_groups(p_a)
    ob, eb = _sorted_groups(p_b)
    ca = ((p_a >= threshold_a) == (y == 1)).astype(float)
    cb = ((p_b >= threshold_b) == (y == 1)).astype(float)
    d_acc, d_ap = [], []
    for start in range(0, n_boot, BLOCK):
        w = _weights(rng, len(y), min(BLOCK, n_boot - start))
        both = ((w * y).sum(1) > 0) & ((w * (1 - y)).sum(1) > 0)
        w = w[both]
        d_acc.append((w * (ca - cb)).sum(1) / len(y))
        d_ap.append(weighted_ap(y[oa], w[:, oa], ea) - weighted_ap(y[ob], w[:, ob], eb))
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    full = np.ones((1, len(y)))
    acc_diff = float(ca.mean() - cb.mean())
    ap_diff = float(weighted_ap(y[oa], full, ea)[0] - weighted_ap(y[ob], full, eb)[0])
    acc_ci = tuple(float(v) for v in np.percentile(np.concatenate(d_acc), q))
    ap_ci = tuple(float(v) for v in np.percentile(np.concatenate(d_ap), q))
    return {"accuracy_diff": acc_diff, "accuracy_diff_ci": acc_ci, "ap_diff": ap_diff, "ap_diff_ci": ap_ci,
            "n": int(len(y)), "significant_accuracy": not acc_ci[0] <= 0 <= acc_ci[1],
            "significant_ap": not ap_ci[0] <= 0 <= ap_ci[1]}  # fmt: skip
