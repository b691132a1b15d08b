"""K-fold splits: every image tested exactly once, for small datasets.

    splits: {mode: kfold, k: 5}      # in config.yaml or an overlay

The label step gives each image a ``fold`` (0..k-1) from its hash (:func:`assign_folds`, as
stable as the fraction splits) and the split ``test``: pooled over the folds, every image is a
test image once. Fold ``f``'s model is trained on the view :func:`fold_view` makes of the
same manifests: fold ``f`` is its test part, fold ``f+1 (mod k)`` its validation part (the
early stopping and the fold's threshold), the other ``k-2`` folds its training part. The
student step trains one model per fold (``<model>/fold<f>/``, :data:`FOLDS_FILE` beside them);
the score step scores each image with the model of the fold it is tested in, and its hard
verdict at that model's own validation threshold, so evaluation pools the folds unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pandas as pd

FOLDS_FILE = "folds.json"  # in a k-fold model folder: {"k": k, "folds": ["fold0", ...]}
KFOLD_STEPS = "students without teachers (no-KD baselines and the zoo's architectures)"


DEFAULT_K = 5


def is_kfold(splits: dict | None) -> bool:
    """True when the ``splits`` config asks for k-fold cross-validation."""
    return bool(splits) and splits.get("mode", "fractions") == "kfold"


def kfold_k(splits: dict | None) -> int:
    """The number of folds of a k-fold ``splits`` config (0 without k-fold)."""
    return int(splits.get("k", DEFAULT_K)) if is_kfold(splits) else 0


def fold_unit(image_id: str, salt: str = "") -> float:
    """The image's place in [0, 1) for the fold draw (its sha256 hex id, or salted)."""
    digest = (
        hashlib.sha256((salt + image_id).encode()).digest()
        if salt
        else bytes.fromhex(image_id[:16])
    )
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_folds(image_ids: Sequence[str], k: int, salt: str = "") -> list[int]:
    """Each image's fold in 0..k-1, from its hash: adding images never moves another one."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    return [min(int(fold_unit(i, salt) * k), k - 1) for i in image_ids]


def fold_name(fold: int) -> str:
    return f"fold{fold}"


def fold_view(manifest: pd.DataFrame, fold: int, k: int, source: str = "manifest") -> pd.DataFrame:
    """The manifest as fold ``fold``'s model sees it: ``split`` = test for its fold, val for
    fold ``fold + 1 (mod k)``, train for the others (a copy; ``source`` names it in errors)."""
    if "fold" not in manifest:
        raise ValueError(f"{source}: no 'fold' column; relabel with splits.mode kfold "
                         "(snakemake --forcerun label)")  # fmt: skip
    if not 0 <= fold < k:
        raise ValueError(f"{source}: fold {fold} outside 0..{k - 1}")
    folds = manifest["fold"].astype(int)
    if len(folds) and (folds.max() >= k or folds.min() < 0):
        raise ValueError(f"{source}: folds {int(folds.min())}..{int(folds.max())} do not fit k={k}; "
                         "relabel with the current splits (snakemake --forcerun label)")  # fmt: skip
    split = pd.Series("train", index=manifest.index)
    split[folds == fold] = "test"
    split[folds == (fold + 1) % k] = "val"
    return manifest.assign(split=split.to_numpy())
