"""Student distillation step: ResNet18 learns from labels and a mixture of teachers.

    meta = train_student(StudentConfig(image_size=32), DistillConfig(alpha=1, epochs=3),
                         manifests, processed_dirs, {"vitgpt2": [cache.parquet, ...]}, out_dir)

The loss and the teacher mixture are in :mod:`sidflow.train.distill_loss`. Teachers
are never run here: their logits and embeddings come from the cache. ``alpha = 0``
(or no teachers) is the plain supervised no-KD baseline. Every epoch is checkpointed
(:mod:`sidflow.train.checkpoint`); a killed run resumes with identical results.
Started by ``torchrun`` it trains data-parallel (:mod:`sidflow.train.distributed`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sidflow.cache.teacher_cache import read_cache
from sidflow.data.loading import ImageBank, load_images
from sidflow.devices import amp_dtype, autocast_to, seed_everything, select_device
from sidflow.models.student import StudentConfig, create_student, predict, save_student
from sidflow.thresholds import calibrate_threshold
from sidflow.train.checkpoint import load_checkpoint, save_checkpoint
from sidflow.train.common import balanced_epoch, warmup_cosine
from sidflow.train.distill_loss import (  # noqa: F401  (re-exported)
    LOSS_KEYS,
    DistillationLoss,
    teacher_embeddings,
    teacher_mixture,
)
from sidflow.train.distributed import init_distributed, shutdown, world

log = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    alpha: float = 1.0
    temperature: float = 2.0
    beta: float = 0.0
    teacher_weights: dict[str, float] = field(default_factory=dict)
    weighting: str = "fixed"  # fixed | confidence | correctness (see distill_loss)
    adjust: str = "none"  # none | swap: swap the mixture's classes where it is wrong
    object_weight: float = 0.0  # > 0 adds the object-class head
    generator_weight: float = 0.0  # > 0 adds the generator-attribution head
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    optimizer: str = "adamw"
    patience: int = 0  # early stopping on validation AP; 0 = train every epoch
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (see sidflow.devices.amp_dtype)
    compile: bool = False  # torch.compile the student (needs a C++ compiler on CPU)
    seed: int = 0
    device: str = "auto"


class _Trainable(torch.nn.Module):
    """Student + loss in one module, so DDP synchronises the loss's projections too."""

    def __init__(self, model, criterion, dtype, device):
        super().__init__()
        self.model, self.criterion, self.dtype, self.device_ = model, criterion, dtype, device

    def forward(self, x, y, soft, emb, obj, gen):
        with autocast_to(self.device_, self.dtype):
            out = self.model(x)
        out = {k: v.float() for k, v in out.items()}
        return self.criterion(out["logits"], y, soft, out["features"], emb, out, obj, gen)


def _targets(train: pd.DataFrame, cfg: DistillConfig, student_cfg: StudentConfig):
    """Extra-head labels and the head names stored in the student config."""
    obj = gen = None
    if cfg.object_weight > 0:
        known = (
            train["object_class"].dropna() if "object_class" in train else pd.Series([], dtype=str)
        )
        if known.empty:
            raise ValueError("object_weight > 0 but no training image has an object class "
                             "(set the dataset's object_class pattern)")  # fmt: skip
        student_cfg.object_classes = sorted(known.astype(str).unique())
        obj = torch.from_numpy(_object_labels(train, student_cfg.object_classes))
    if cfg.generator_weight > 0:
        keys = train["dataset"] + "/" + train["generator"]
        fakes = sorted(keys[train["label"] == 1].unique())
        student_cfg.generators = ["real", *fakes]
        lookup = {k: i + 1 for i, k in enumerate(fakes)}
        gen = torch.tensor(
            [0 if lab == 0 else lookup[k] for k, lab in zip(keys, train["label"], strict=True)]
        )
    return obj, gen


def _fingerprint(student_cfg, cfg, image_ids, soft) -> str:
    h = hashlib.sha256(json.dumps([asdict(student_cfg), asdict(cfg) | {"device": "", "compile": False}],
                                  sort_keys=True, default=str).encode())  # fmt: skip
    h.update("\n".join(image_ids).encode())
    if soft is not None:
        h.update(soft.numpy().tobytes())
    return h.hexdigest()[:24]


def _optimizer(params, cfg: DistillConfig):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_student(
    student_cfg: StudentConfig,
    cfg: DistillConfig,
    manifests: list[str],
    processed_dirs: list[str],
    cache_paths: dict[str, list[str]],
    out_dir: str | Path,
    preprocess: dict | None = None,
    checkpoint_dir: str | Path | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
) -> dict:
    """Train one student variant; ``preprocess`` (image_size, jpeg_quality...) is stored
    with the model so that ``sidflow predict`` applies exactly the same treatment.
    ``checkpoint_dir`` (default ``<out_dir>.ckpt``) holds the per-epoch checkpoint."""
    from sklearn.metrics import average_precision_score

    rank, size, _ = world()
    device = init_distributed(select_device(cfg.device))
    dtype = amp_dtype(device, cfg.precision)
    seed_everything(cfg.seed)
    train = load_images(manifests, processed_dirs, ["train"])
    val = load_images(manifests, processed_dirs, ["val"])
    use_kd = (cfg.alpha > 0 or cfg.beta > 0) and bool(cache_paths)
    soft, embeddings = None, {}
    if use_kd:
        cols = ["image_id", "logit_real", "logit_fake"] + (["embedding"] if cfg.beta > 0 else [])
        caches = {k: read_cache(v, cols) for k, v in cache_paths.items()}
        soft = torch.from_numpy(teacher_mixture(caches, train["image_id"], cfg.teacher_weights, cfg.temperature,
                                                cfg.weighting, train["label"], cfg.adjust))  # fmt: skip
        if cfg.beta > 0:
            embeddings = teacher_embeddings(caches, train["image_id"])
    obj, gen = _targets(train, cfg, student_cfg)
    labels = torch.from_numpy(train["label"].to_numpy().astype(np.int64))
    model = (
        create_student(student_cfg.arch, student_cfg)
        .to(device)
        .to(memory_format=torch.channels_last)
    )
    mean, std = student_cfg.image_mean, student_cfg.image_std
    bank, val_bank = ImageBank(train["jpeg"], mean, std), ImageBank(val["jpeg"], mean, std)
    criterion = DistillationLoss(
        cfg.alpha if use_kd else 0.0, cfg.temperature, beta=cfg.beta if use_kd else 0.0,
        feature_dim=model.feature_dim, teacher_dims={k: v.shape[1] for k, v in embeddings.items()},
        object_weight=cfg.object_weight, generator_weight=cfg.generator_weight,
    ).to(device)  # fmt: skip
    opt = _optimizer(list(model.parameters()) + list(criterion.parameters()), cfg)
    per_rank = max(1, cfg.batch_size // size)
    steps = -(-len(train) // cfg.batch_size)
    sched = warmup_cosine(opt, cfg.epochs * steps, warmup_frac=0.15)
    net = _Trainable(torch.compile(model) if cfg.compile else model, criterion, dtype, device)
    if size > 1:
        net = torch.nn.parallel.DistributedDataParallel(net)
    ckpt = Path(checkpoint_dir) if checkpoint_dir else Path(f"{out_dir}.ckpt")
    fingerprint = _fingerprint(student_cfg, cfg, train["image_id"].tolist(), soft)
    state = {
        "epoch": 0,
        "history": [],
        "best_ap": -1.0,
        "best_epoch": 0,
        "p_val": [],
        "fingerprint": fingerprint,
    }
    best_state = None
    resumed = load_checkpoint(
        ckpt, fingerprint, model=model, criterion=criterion, optimizer=opt, scheduler=sched
    )
    if resumed:
        state, best_state = resumed
    log.info("student: %d train / %d val images, KD=%s, heads=%s, device %s, autocast %s, world %d",
             len(train), len(val), use_kd, [h for h, t in (("object", obj), ("generator", gen)) if t is not None],
             device, dtype, size)  # fmt: skip
    for epoch in range(state["epoch"], cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)
        order = balanced_epoch(train["label"], cfg.seed, epoch)
        net.train()
        t0, n, sums = time.time(), 0, dict.fromkeys(LOSS_KEYS, 0.0)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size][rank::size][:per_rank]
            x = (
                bank.batch(idx, augment=True)
                .to(device)
                .contiguous(memory_format=torch.channels_last)
            )
            terms = net(x, labels[idx].to(device), soft[idx].to(device) if soft is not None else None,
                        {k: v[idx].to(device) for k, v in embeddings.items()},
                        obj[idx].to(device) if obj is not None else None,
                        gen[idx].to(device) if gen is not None else None)  # fmt: skip
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            sched.step()
            for k in sums:
                sums[k] += float(terms[k].detach()) * len(idx)
            n += len(idx)
        preds = predict(model, val_bank, 2 * cfg.batch_size, device, dtype)
        ap = float(average_precision_score(val["label"], preds["p_fake"]))
        row = {"epoch": epoch + 1, **{k: v / max(n, 1) for k, v in sums.items()}, "val_ap": ap,
               "seconds": round(time.time() - t0, 1), "images_per_s": round(n * size / (time.time() - t0), 1)}  # fmt: skip
        if obj is not None:
            vo = _object_labels(val, student_cfg.object_classes)
            row["val_object_accuracy"] = float(
                (preds["object_pred"][vo >= 0] == vo[vo >= 0]).mean()
            )
        state["history"].append(row)
        log.info("student epoch %d: %s", epoch + 1, row)
        if ap > state["best_ap"]:
            best_state = {
                k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()
            }
            state.update(best_ap=ap, best_epoch=epoch + 1, p_val=preds["p_fake"].tolist())
        state["epoch"] = epoch + 1
        stop = cfg.patience and epoch + 1 - state["best_epoch"] >= cfg.patience
        if rank == 0:
            save_checkpoint(ckpt, model=model, criterion=criterion, optimizer=opt, scheduler=sched,
                            best_state=best_state, state=state)  # fmt: skip
        if on_epoch_end:
            on_epoch_end(epoch + 1)
        if stop:
            log.info("early stopping: no better validation AP for %d epochs", cfg.patience)
            break
    model.load_state_dict(best_state)
    threshold = calibrate_threshold(val["label"], state["p_val"])
    meta = {
        "student": asdict(student_cfg),
        "distill": asdict(cfg),
        "teachers": sorted(cache_paths) if use_kd else [],
        "threshold": threshold,
        "threshold_source": "validation split, max balanced accuracy",
        "best_epoch": state["best_epoch"],
        "val_ap": state["best_ap"],
        "history": state["history"],
        "train_images": int(len(train)),
        "world_size": size,
        "preprocess": preprocess or {},
    }
    if rank == 0:
        save_student(model.cpu(), meta, out_dir)
        shutil.rmtree(ckpt, ignore_errors=True)
        log.info("student saved to %s (best epoch %d, val AP %.4f, threshold %.4f)", out_dir,
                 state["best_epoch"], state["best_ap"], threshold)  # fmt: skip
    shutdown()
    return meta


def _object_labels(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Index of each row's object class in ``names`` (-1 when unknown)."""
    lookup = {c: i for i, c in enumerate(names)}
    values = frame["object_class"] if "object_class" in frame else [None] * len(frame)
    return np.array(
        [lookup.get(c, -1) if isinstance(c, str) else -1 for c in values], dtype=np.int64
    )
