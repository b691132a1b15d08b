"""Decision thresholds, chosen on validation data only.

In the foundation layer because two layers need the one implementation: training stores the
calibrated threshold with the model (``sidflow predict`` applies it) and evaluation calibrates
every detector's threshold on its validation scores before it reads the test scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
