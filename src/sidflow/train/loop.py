"""The one training loop of every trained detector (the student, RINE, and the zoo's models).

    state = Checkpoint(path, {"model": model}, {"optimizer": opt}).resume(LoopState(fingerprint=fp))
    state = fit(task, state, epochs=10, val_labels=val["label"], patience=3, checkpoint=ckpt)
    card = {"detector": ..., **card_fields(state, val["label"], len(train))}

A model takes part through a :class:`Trainee`: ``train_epoch(e)`` runs one epoch (most with
:func:`train_one_epoch`) and returns its history columns, ``predict_val()`` scores the
validation split, ``val_columns(preds)`` adds columns after ``val_ap``. :func:`fit` validates
after every epoch (:func:`validate`, average precision), keeps the best epoch's weights and
validation scores, stops early after ``patience`` epochs without a better AP, optionally
writes an atomic checkpoint per epoch (:mod:`sidflow.train.checkpoint`), and ends with the
best weights loaded. :func:`card_fields` gives the metadata every trained detector stores
(the student in ``student.json``, RINE in ``card.json``): the threshold calibrated on the best
epoch's validation scores, the best epoch, its AP, the history, the number of training images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from sidflow.devices import adjust_threads
from sidflow.thresholds import calibrate_threshold
from sidflow.train.checkpoint import load_checkpoint, save_checkpoint
from sidflow.train.progress import Progress

log = logging.getLogger(__name__)

THRESHOLD_SOURCE = "validation split, max balanced accuracy"
ADJUST_EVERY_S = 30.0  # elastic jobs re-read the idle cores this often while training


@dataclass
class LoopState:
    """Where a training run stands; all but ``best_state`` is the checkpoint's ``state.json``."""

    epoch: int = 0  # epochs done
    history: list[dict] = field(default_factory=list)  # one row per epoch
    best_ap: float = -1.0  # the best validation AP so far
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None  # the best epoch's weights (CPU)
    p_val: list[float] = field(default_factory=list)  # the best epoch's validation p_fake
    fingerprint: str = ""  # config + training data; a checkpoint of another run is ignored

    def to_json(self) -> dict:
        return {"epoch": self.epoch, "history": self.history, "best_ap": self.best_ap,
                "best_epoch": self.best_epoch, "p_val": self.p_val, "fingerprint": self.fingerprint}  # fmt: skip


class Trainee(Protocol):
    """What :func:`fit` needs from the model being trained."""

    name: str  # in the log lines
    model: torch.nn.Module  # whose weights are kept at the best epoch

    def train_epoch(self, epoch: int) -> dict: ...  # history columns (losses, lr...)

    def predict_val(self) -> dict[str, np.ndarray]: ...  # {"p_fake": ..., other heads}

    def val_columns(self, preds: dict[str, np.ndarray]) -> dict: ...  # after "val_ap"


@dataclass
class Checkpoint:
    """The per-epoch checkpoint of a run: ``modules`` (name -> module: weights) and
    ``stateful`` (name -> optimizer, scheduler...) are saved and restored. ``write=False``
    (DDP ranks but 0) reads it but never writes or removes it."""

    path: Path
    modules: dict[str, torch.nn.Module]
    stateful: dict[str, Any]
    write: bool = True

    def resume(self, state: LoopState) -> LoopState:
        """The checkpointed state (its objects restored) when it is of this run, else ``state``."""
        got = load_checkpoint(
            self.path, state.fingerprint, modules=self.modules, stateful=self.stateful
        )
        return state if got is None else LoopState(**got[0], best_state=got[1])

    def save(self, state: LoopState) -> None:
        if self.write:
            save_checkpoint(self.path, modules=self.modules, stateful=self.stateful,
                            best_state=state.best_state, state=state.to_json())  # fmt: skip

    def remove(self) -> None:
        if self.write:
            shutil.rmtree(self.path, ignore_errors=True)


def fingerprint(configs: list, ids: Sequence[str], *arrays: np.ndarray) -> str:
    """Hash of a run's configuration, training image ids and any training targets."""
    h = hashlib.sha256(json.dumps(configs, sort_keys=True, default=str).encode())
    h.update("\n".join(ids).encode())
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def train_one_epoch(
    module: torch.nn.Module,
    step: Callable[[Any], dict[str, torch.Tensor]],
    batches: Iterable[tuple[Any, int]],
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    keys: Sequence[str] = ("loss",),
    progress: Progress | None = None,
    images: Callable[[Any], int] | None = None,
    after_step: Callable[[], None] | None = None,
) -> tuple[dict[str, float], int]:
    """One pass over ``batches`` ((batch, weight) pairs) with ``module`` in training mode.

    ``step(batch)`` returns the loss terms; ``terms["loss"]`` is minimised (then the scheduler,
    if any, steps). Returns the sums over batches of ``float(term) * weight`` for ``keys``,
    and the sum of the weights. The sums stay on the device (float64) until the end, so no
    step waits for the host; ``progress`` gets each step's images (``images(batch)``, default
    the weight) and loss, and writes a line every ~30 s (:mod:`sidflow.train.progress`);
    ``after_step()`` runs after every optimiser step (e.g. a weight average's update).
    Elastic jobs re-read the idle cores at the start and every ``ADJUST_EVERY_S`` seconds
    (:class:`sidflow.devices.ElasticThreads`)."""
    adjust_threads()
    next_adjust = time.monotonic() + ADJUST_EVERY_S
    module.train()
    sums: dict[str, Any] = dict.fromkeys(keys, 0.0)
    total = 0
    for batch, weight in batches:
        terms = step(batch)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        for k in sums:
            sums[k] = sums[k] + terms[k].detach().double() * weight
        total += weight
        if time.monotonic() >= next_adjust:
            adjust_threads()
            next_adjust = time.monotonic() + ADJUST_EVERY_S
        if progress is not None:
            progress.update(images(batch) if images else weight, terms["loss"].detach())
    if progress is not None:
        progress.close()
    return {k: float(v) for k, v in sums.items()}, total


def validate(
    predict: Callable[[], dict[str, np.ndarray]], labels: Sequence[int]
) -> tuple[dict[str, np.ndarray], float]:
    """(the predictions, their average precision) on the validation split."""
    from sklearn.metrics import average_precision_score

    preds = predict()
    return preds, float(average_precision_score(labels, preds["p_fake"]))


def keep_best(state: LoopState, model: torch.nn.Module, ap: float, preds: dict) -> bool:
    """Record the epoch just done (``state.epoch``) as the best one when its AP is higher."""
    if ap <= state.best_ap:
        return False
    state.best_state = {
        k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()
    }
    state.best_ap, state.best_epoch = ap, state.epoch
    state.p_val = np.asarray(preds["p_fake"]).tolist()
    return True


def fit(
    task: Trainee,
    state: LoopState,
    *,
    epochs: int,
    val_labels: Sequence[int],
    patience: int = 0,
    checkpoint: Checkpoint | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
) -> LoopState:
    """Train from ``state.epoch`` to ``epochs`` (fewer with ``patience`` > 0: stop when the last
    ``patience`` epochs brought no better validation AP); ``task.model`` ends with the best
    epoch's weights."""
    for epoch in range(state.epoch, epochs):
        row = {"epoch": epoch + 1, **task.train_epoch(epoch)}
        preds, row["val_ap"] = validate(task.predict_val, val_labels)
        row.update(task.val_columns(preds))
        state.history.append(row)
        log.info("%s epoch %d: %s", task.name, epoch + 1, row)
        state.epoch = epoch + 1
        keep_best(state, task.model, row["val_ap"], preds)
        stop = patience and state.epoch - state.best_epoch >= patience
        if checkpoint is not None:
            checkpoint.save(state)
        if on_epoch_end:
            on_epoch_end(epoch + 1)
        if stop:
            log.info("early stopping: no better validation AP for %d epochs", patience)
            break
    task.model.load_state_dict(state.best_state)
    return state


def card_fields(state: LoopState, val_labels: Sequence[int], train_images: int) -> dict:
    """The metadata every trained detector stores beside its weights."""
    return {
        "threshold": calibrate_threshold(val_labels, state.p_val),
        "threshold_source": THRESHOLD_SOURCE,
        "best_epoch": state.best_epoch,
        "val_ap": state.best_ap,
        "history": state.history,
        "train_images": int(train_images),
    }
