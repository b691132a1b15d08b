"""Student distillation step: ResNet18 learns from labels and a mixture of teachers.

    meta = train_student(StudentConfig(image_size=32), DistillConfig(alpha=1, epochs=3),
                         manifests, processed_dirs, {"vitgpt2": [cache.parquet, ...]}, out_dir)

The loss and the teacher mixture are in :mod:`sidflow.train.distill_loss`. Teachers
are never run here: their logits and embeddings come from the cache. ``alpha = 0``
(or no teachers) is the plain supervised no-KD baseline. The epochs run in the shared loop
(:mod:`sidflow.train.loop`); every epoch is checkpointed (:mod:`sidflow.train.checkpoint`),
a killed run resumes with identical results. ``translate`` adds random shifts to the flips;
``ema`` validates, keeps and saves an exponential moving average of the weights instead of the
raw ones (both off by default).
Started by ``torchrun`` it trains data-parallel (:mod:`sidflow.train.distributed`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sidflow.cache.teacher_cache import read_cache
from sidflow.data.loading import ImageBank, load_images, random_translate
from sidflow.devices import amp_dtype, autocast_to, seed_everything, select_device
from sidflow.models.student import (
    StudentConfig,
    create_student,
    predict,
    resolve_student_config,
    save_student,
)
from sidflow.train.common import balanced_epoch, warmup_cosine
from sidflow.train.distill_loss import (  # noqa: F401  (re-exported)
    LOSS_KEYS,
    DistillationLoss,
    teacher_embeddings,
    teacher_mixture,
)
from sidflow.train.distributed import init_distributed, shutdown, world
from sidflow.train.loop import Checkpoint, LoopState, card_fields, fingerprint, fit, train_one_epoch
from sidflow.train.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    """The student's loss and training settings (an experiment's ``students`` entry)."""

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
    # blur + JPEG training augmentation per image and epoch (CNNDetection); None: flips only
    augment: dict | None = None
    translate: int = 0  # random shift of up to this many pixels per image (reflect-padded)
    ema: float = 0.0  # > 0: per-step decay of a weight average that is validated and kept
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


def _optimizer(params, cfg: DistillConfig):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class _Data:
    """The training and validation images with every training target."""

    train: pd.DataFrame
    val: pd.DataFrame
    labels: torch.Tensor
    use_kd: bool
    soft: torch.Tensor | None  # the teacher mixture's class probabilities
    embeddings: dict[str, torch.Tensor]  # teacher name -> embeddings (beta > 0)
    obj: torch.Tensor | None  # object-class labels (object head)
    gen: torch.Tensor | None  # generator labels (generator head)

    def heads(self) -> list[str]:
        return [h for h, t in (("object", self.obj), ("generator", self.gen)) if t is not None]


def _load_data(student_cfg, cfg: DistillConfig, manifests, processed_dirs, cache_paths,
               fold: tuple[int, int] | None = None) -> _Data:  # fmt: skip
    """Images, labels, the teachers' soft labels / embeddings from the cache, head targets
    (the extra heads' names go into ``student_cfg``); ``fold`` = (f, k): k-fold model f's splits."""
    train = load_images(manifests, processed_dirs, ["train"], fold=fold)
    val = load_images(manifests, processed_dirs, ["val"], fold=fold)
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
    return _Data(train, val, labels, use_kd, soft, embeddings, obj, gen)


def _build(student_cfg, cfg: DistillConfig, data: _Data, device):
    """(model, criterion, optimizer, scheduler); creation order fixes the initial weights."""
    model = (
        create_student(student_cfg.arch, student_cfg)
        .to(device)
        .to(memory_format=torch.channels_last)
    )
    kd = data.use_kd
    criterion = DistillationLoss(
        cfg.alpha if kd else 0.0, cfg.temperature, beta=cfg.beta if kd else 0.0,
        feature_dim=model.feature_dim, teacher_dims={k: v.shape[1] for k, v in data.embeddings.items()},
        object_weight=cfg.object_weight, generator_weight=cfg.generator_weight,
    ).to(device)  # fmt: skip
    opt = _optimizer(list(model.parameters()) + list(criterion.parameters()), cfg)
    steps = -(-len(data.train) // cfg.batch_size)
    sched = warmup_cosine(opt, cfg.epochs * steps, warmup_frac=0.15)
    return model, criterion, opt, sched


class _StudentTrainee:
    """The student as :func:`sidflow.train.loop.fit` trains it (see :class:`~sidflow.train.loop.Trainee`)."""

    name = "student"

    def __init__(self, student_cfg, cfg: DistillConfig, data: _Data, model, criterion, opt,
                 sched, device, dtype):  # fmt: skip
        self.student_cfg, self.cfg, self.data, self.model = student_cfg, cfg, data, model
        self.net_model = model  # the weights the optimiser trains (``model``: the ones kept)
        self.opt, self.sched, self.device, self.dtype = opt, sched, device, dtype
        self.rank, self.size, _ = world()
        mean, std = student_cfg.image_mean, student_cfg.image_std
        self.bank, self.val_bank = (
            ImageBank(data.train["jpeg"], mean, std),
            ImageBank(data.val["jpeg"], mean, std),
        )
        self.net = _Trainable(
            torch.compile(model) if cfg.compile else model, criterion, dtype, device
        )
        # with ``ema``, validation, the best epoch and the saved weights are the average's
        self.ema = None
        if cfg.ema > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema),
                                     use_buffers=True)  # fmt: skip
            self.model = self.ema.module
        if self.size > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.net)
        self.t0, self.n, self.epoch = 0.0, 0, 0
        self.train_ids = list(data.train["image_id"])

    def _to(self, t: torch.Tensor | None, idx):
        return t[idx].to(self.device) if t is not None else None

    def _step(self, idx) -> dict[str, torch.Tensor]:
        if self.cfg.augment:
            x = self.bank.augmented_batch(
                idx, self.train_ids, self.epoch, self.cfg.seed, self.cfg.augment
            )
        else:
            x = self.bank.batch(idx, augment=True)
        if self.cfg.translate > 0:  # after either augmentation, from the per-epoch seeded RNG
            x = random_translate(x, self.cfg.translate)
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        d = self.data
        return self.net(x, self._to(d.labels, idx), self._to(d.soft, idx),
                        {k: self._to(v, idx) for k, v in d.embeddings.items()},
                        self._to(d.obj, idx), self._to(d.gen, idx))  # fmt: skip

    def _average(self) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.net_model)

    def _batches(self, order: np.ndarray):
        bs, per_rank = self.cfg.batch_size, max(1, self.cfg.batch_size // self.size)
        for start in range(0, len(order), bs):
            idx = order[start : start + bs][self.rank :: self.size][:per_rank]
            yield idx, len(idx)

    def train_epoch(self, epoch: int) -> dict:
        self.epoch = epoch  # the augmentation's view
        torch.manual_seed(self.cfg.seed * 1000 + epoch)
        order = balanced_epoch(self.data.train["label"], self.cfg.seed, epoch)
        self.t0 = time.time()
        steps = -(-len(order) // self.cfg.batch_size)
        progress = Progress(f"student epoch {epoch + 1}", steps) if self.rank == 0 else None
        sums, self.n = train_one_epoch(self.net, self._step, self._batches(order), self.opt, self.sched,
                                       LOSS_KEYS, progress, after_step=self._average)  # fmt: skip
        return {k: v / max(self.n, 1) for k, v in sums.items()}

    def predict_val(self) -> dict[str, np.ndarray]:
        return predict(self.model, self.val_bank, 2 * self.cfg.batch_size, self.device, self.dtype)

    def val_columns(self, preds: dict[str, np.ndarray]) -> dict:
        out = {"seconds": round(time.time() - self.t0, 1),
               "images_per_s": round(self.n * self.size / (time.time() - self.t0), 1)}  # fmt: skip
        if self.data.obj is not None:
            vo = _object_labels(self.data.val, self.student_cfg.object_classes)
            out["val_object_accuracy"] = float(
                (preds["object_pred"][vo >= 0] == vo[vo >= 0]).mean()
            )
        return out


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
    fold: tuple[int, int] | None = None,
) -> dict:
    """Train one student variant; ``preprocess`` (image_size, jpeg_quality...) is stored
    with the model so that ``sidflow predict`` applies exactly the same treatment.
    ``checkpoint_dir`` (default ``<out_dir>.ckpt``) holds the per-epoch checkpoint.
    ``fold`` = (f, k): train k-fold model f (:mod:`sidflow.data.folds`; card key ``fold``)."""
    rank, size, _ = world()
    device = init_distributed(select_device(cfg.device))
    dtype = amp_dtype(device, cfg.precision)
    seed_everything(cfg.seed)
    student_cfg = resolve_student_config(student_cfg)  # e.g. ImageNet weights' normalisation
    data = _load_data(student_cfg, cfg, manifests, processed_dirs, cache_paths, fold)
    model, criterion, opt, sched = _build(student_cfg, cfg, data, device)
    task = _StudentTrainee(student_cfg, cfg, data, model, criterion, opt, sched, device, dtype)
    modules = {
        "model": model,
        "criterion": criterion,
        **({"ema": task.ema} if task.ema is not None else {}),
    }
    ckpt = Checkpoint(Path(checkpoint_dir) if checkpoint_dir else Path(f"{out_dir}.ckpt"),
                      modules, {"optimizer": opt, "scheduler": sched}, write=rank == 0)  # fmt: skip
    soft = [data.soft.numpy()] if data.soft is not None else []
    configs = [asdict(student_cfg), asdict(cfg) | {"device": "", "compile": False}]
    state = ckpt.resume(
        LoopState(fingerprint=fingerprint(configs, data.train["image_id"].tolist(), *soft))
    )
    log.info("student: %d train / %d val images, KD=%s, heads=%s, device %s, autocast %s, world %d",
             len(data.train), len(data.val), data.use_kd, data.heads(), device, dtype, size)  # fmt: skip
    state = fit(task, state, epochs=cfg.epochs, val_labels=data.val["label"], patience=cfg.patience,
                checkpoint=ckpt, on_epoch_end=on_epoch_end)  # fmt: skip
    meta = {"student": asdict(student_cfg), "distill": asdict(cfg),
            "teachers": sorted(cache_paths) if data.use_kd else [],
            **card_fields(state, data.val["label"], len(data.train)),
            "world_size": size, "preprocess": preprocess or {},
            **({"fold": {"fold": fold[0], "k": fold[1]}} if fold else {})}  # fmt: skip
    if rank == 0:
        save_student(task.model.cpu(), meta, out_dir)
        ckpt.remove()
        log.info("student saved to %s (best epoch %d, val AP %.4f, threshold %.4f)", out_dir,
                 state.best_epoch, state.best_ap, meta["threshold"])  # fmt: skip
    shutdown()
    return meta


def _object_labels(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Index of each row's object class in ``names`` (-1 when unknown)."""
    lookup = {c: i for i, c in enumerate(names)}
    values = frame["object_class"] if "object_class" in frame else [None] * len(frame)
    return np.array(
        [lookup.get(c, -1) if isinstance(c, str) else -1 for c in values], dtype=np.int64
    )
