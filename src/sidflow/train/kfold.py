"""K-fold training: one model per fold in one model folder (``splits: {mode: kfold, k}``).

    meta = train_folds(train_one, out_dir="results/small/models/student-nokd",
                       checkpoint_dir="results/small/checkpoints/student-nokd", k=5)

``train_one(fold, out_dir, checkpoint_dir)`` trains fold ``fold``'s model (the student step:
:func:`sidflow.train.distill.train_student` with ``fold=(fold, k)``). The folder gets
``fold0/ ... fold<k-1>/`` (each a complete model), :data:`~sidflow.data.folds.FOLDS_FILE`
and a card of the same name as a fold's (``student.json``) that summarises them for the
report: each fold's threshold, best epoch and validation AP, their mean, and the training
images per fold. A fold already finished (its card written) is not trained again, so a run
killed between folds resumes at the next one; within a fold the epoch checkpoint resumes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sidflow.data.folds import FOLDS_FILE, fold_name
from sidflow.io import read_json, write_json

log = logging.getLogger(__name__)


def fold_card(metas: list[dict]) -> dict:
    """The k-fold model folder's card: per-fold facts and their summary (no single threshold:
    each fold's model decides at its own, see :mod:`sidflow.data.folds`)."""
    first = metas[0]
    k = len(metas)
    return {
        "kfold": {"k": k, "folds": [fold_name(f) for f in range(k)]},
        "student": first.get("student"),
        "distill": first.get("distill"),
        "teachers": first.get("teachers", []),
        "preprocess": first.get("preprocess", {}),
        "threshold": None,
        "fold_thresholds": [m["threshold"] for m in metas],
        "best_epoch": None,
        "fold_best_epochs": [m["best_epoch"] for m in metas],
        "val_ap": float(np.mean([m["val_ap"] for m in metas])),
        "fold_val_aps": [m["val_ap"] for m in metas],
        "train_images": int(np.mean([m["train_images"] for m in metas])),
        "fold_train_images": [m["train_images"] for m in metas],
        "threshold_source": "each fold's own validation part (the next fold), max balanced accuracy",
    }


def train_folds(
    train_one: Callable[[int, Path, Path], dict],
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    k: int,
    card_name: str = "student.json",
) -> dict:
    """Train the k folds' models into ``out_dir/fold<f>`` and write the folder's card."""
    out, ckpt = Path(out_dir), Path(checkpoint_dir)
    metas = []
    for f in range(k):
        done = out / fold_name(f) / card_name
        if done.is_file():
            log.info("k-fold: %s already trained (%s)", fold_name(f), done)
            metas.append(read_json(done))
            continue
        log.info("k-fold: training %s of %d", fold_name(f), k)
        metas.append(train_one(f, out / fold_name(f), ckpt / fold_name(f)))
    card = fold_card(metas)
    write_json(
        out / FOLDS_FILE, card["kfold"]
    )  # first: the card alone is never read as one model's
    write_json(out / card_name, card)
    log.info("k-fold: %d models in %s, validation AP per fold %s", k, out, card["fold_val_aps"])
    return card
