"""Student distillation step: ResNet18 learns from labels and a mixture of teachers.

    loss = task_loss + alpha * T^2 * KL(teacher_mixture_T || student_T)
           + beta * mean_t (1 - cos(P_t(student_features), teacher_embedding_t))

Teachers are never run here: their logits come from the cache. ``alpha = 0`` (or
no teachers) is the plain supervised no-KD baseline. The mixture is a fixed
weighting of the teachers' temperature-softened distributions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from sidflow.cache.teacher_cache import read_cache
from sidflow.data.loading import JpegDataset, load_images
from sidflow.devices import autocast, seed_everything, select_device
from sidflow.io import atomic_dir, write_json
from sidflow.models.student import StudentConfig, create_student
from sidflow.train.common import balanced_sampler, calibrate_threshold, warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    alpha: float = 1.0
    temperature: float = 2.0
    beta: float = 0.0
    teacher_weights: dict[str, float] = field(default_factory=dict)
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    optimizer: str = "adamw"
    seed: int = 0
    device: str = "auto"


class DistillationLoss(torch.nn.Module):
    """``{loss, task_loss, kd_loss, feat_loss}`` for one batch.

    ``loss = CE + alpha * T^2 * KL(teacher_probs || softmax(logits / T))
    + beta * mean_t (1 - cos(P_t(features), embedding_t))``, where ``teacher_probs`` is the
    T-softened teacher mixture and ``P_t`` a linear projection of the student's pooled
    features onto teacher t's cached embedding space (trained with the student, not saved).
    """

    def __init__(
        self,
        alpha: float,
        temperature: float,
        beta: float = 0.0,
        feature_dim: int = 512,
        teacher_dims: dict[str, int] | None = None,
    ):
        super().__init__()
        self.alpha, self.t, self.beta = alpha, temperature, beta
        dims = teacher_dims if beta > 0 else {}
        self.projections = torch.nn.ModuleDict(
            {name: torch.nn.Linear(feature_dim, dim) for name, dim in (dims or {}).items()}
        )

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        teacher_probs: torch.Tensor | None,
        features: torch.Tensor | None = None,
        teacher_embeddings: dict[str, torch.Tensor] | None = None,
    ) -> dict:
        task = F.cross_entropy(logits, labels)
        zero = torch.zeros((), device=logits.device)
        kd, feat = zero, zero
        if teacher_probs is not None and self.alpha > 0:
            log_student = F.log_softmax(logits / self.t, dim=1)
            kd = F.kl_div(log_student, teacher_probs, reduction="batchmean") * self.t**2
        if self.beta > 0 and len(self.projections) and features is not None and teacher_embeddings:
            terms = [
                1 - F.cosine_similarity(self.projections[name](features), emb, dim=1).mean()
                for name, emb in teacher_embeddings.items()
            ]
            feat = torch.stack(terms).mean()
        loss = task + self.alpha * kd + self.beta * feat
        return {
            "loss": loss,
            "task_loss": task.detach(),
            "kd_loss": kd.detach(),
            "feat_loss": feat.detach(),
        }


def teacher_embeddings(caches: dict[str, pd.DataFrame], image_ids) -> dict[str, torch.Tensor]:
    """Each teacher's cached embedding for ``image_ids`` (N x dim float32 tensors)."""
    out = {}
    for name, df in caches.items():
        idx = df.set_index("image_id").reindex(image_ids)
        if idx["embedding"].isna().any():
            raise ValueError(f"teacher {name}: training images missing from its cache")
        out[name] = torch.from_numpy(np.stack(idx["embedding"].to_numpy()).astype(np.float32))
    return out


def teacher_mixture(
    caches: dict[str, pd.DataFrame], image_ids, weights: dict[str, float], t: float
) -> np.ndarray:
    """Weighted mixture of the teachers' softmax(logits / T), aligned to ``image_ids``."""
    total = sum(weights.get(k, 1.0) for k in caches)
    mix = np.zeros((len(image_ids), 2), dtype=np.float64)
    for name, df in caches.items():
        idx = df.set_index("image_id").reindex(image_ids)
        if idx["logit_fake"].isna().any():
            raise ValueError(
                f"teacher {name}: {int(idx['logit_fake'].isna().sum())} training images not in its cache"
            )
        logits = idx[["logit_real", "logit_fake"]].to_numpy(np.float64) / t
        probs = np.exp(logits - logits.max(1, keepdims=True))
        mix += weights.get(name, 1.0) / total * probs / probs.sum(1, keepdims=True)
    return mix.astype(np.float32)


@torch.no_grad()
def predict(model, jpegs, batch_size: int, device, mean: float, std: float) -> np.ndarray:
    model.eval()
    loader = torch.utils.data.DataLoader(
        JpegDataset(jpegs, np.zeros(len(jpegs), int), mean, std), batch_size=batch_size
    )
    out = []
    for x, _, _ in loader:
        with autocast(device):
            logits = model(x.to(device))["logits"].float()
        out.append(torch.softmax(logits, 1)[:, 1].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def train_student(
    student_cfg: StudentConfig,
    cfg: DistillConfig,
    manifests: list[str],
    processed_dirs: list[str],
    cache_paths: dict[str, list[str]],
    out_dir: str | Path,
    preprocess: dict | None = None,
) -> dict:
    """Train one student variant; ``preprocess`` (image_size, jpeg_quality...) is stored
    with the model so that ``sidflow predict`` applies exactly the same treatment."""
    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    train = load_images(manifests, processed_dirs, ["train"])
    val = load_images(manifests, processed_dirs, ["val"])
    use_kd = (cfg.alpha > 0 or cfg.beta > 0) and bool(cache_paths)
    soft, embeddings = None, {}
    if use_kd:
        cols = ["image_id", "logit_real", "logit_fake"] + (["embedding"] if cfg.beta > 0 else [])
        caches = {k: read_cache(v, cols) for k, v in cache_paths.items()}
        soft = torch.from_numpy(
            teacher_mixture(caches, train["image_id"], cfg.teacher_weights, cfg.temperature)
        )
        if cfg.beta > 0:
            embeddings = teacher_embeddings(caches, train["image_id"])
    model = create_student(student_cfg.arch, student_cfg).to(device)
    mean, std = student_cfg.image_mean, student_cfg.image_std
    loader = torch.utils.data.DataLoader(
        JpegDataset(train["jpeg"], train["label"], mean, std, augment=True),
        batch_size=cfg.batch_size,
        sampler=balanced_sampler(train["label"], cfg.seed),
    )
    criterion = DistillationLoss(
        cfg.alpha if use_kd else 0.0,
        cfg.temperature,
        beta=cfg.beta if use_kd else 0.0,
        feature_dim=model.feature_dim,
        teacher_dims={k: v.shape[1] for k, v in embeddings.items()},
    ).to(device)
    params = list(model.parameters()) + list(criterion.parameters())
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=0.9,
            weight_decay=cfg.weight_decay,
            nesterov=True,
        )
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.epochs * len(loader), warmup_frac=0.15)
    best = {"ap": -1.0}
    history = []
    log.info(
        "student: %d train / %d val images, KD=%s, device %s", len(train), len(val), use_kd, device
    )
    for epoch in range(cfg.epochs):
        model.train()
        t0, n = time.time(), 0
        sums = {"loss": 0.0, "task_loss": 0.0, "kd_loss": 0.0, "feat_loss": 0.0}
        for x, y, idx in loader:
            x, y = x.to(device), y.to(device)
            with autocast(device):
                out = model(x)
            terms = criterion(
                out["logits"].float(),
                y,
                soft[idx].to(device) if soft is not None else None,
                out["features"].float(),
                {k: v[idx].to(device) for k, v in embeddings.items()},
            )
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            sched.step()
            for k in sums:
                sums[k] += float(terms[k].detach()) * len(y)
            n += len(y)
        p_val = predict(model, val["jpeg"].tolist(), 2 * cfg.batch_size, device, mean, std)
        ap = float(average_precision_score(val["label"], p_val))
        row = {
            "epoch": epoch + 1,
            **{k: v / n for k, v in sums.items()},
            "val_ap": ap,
            "seconds": round(time.time() - t0, 1),
        }
        history.append(row)
        log.info("student epoch %d: %s", epoch + 1, row)
        if ap > best["ap"]:
            best = {
                "ap": ap,
                "epoch": epoch + 1,
                "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "p_val": p_val,
            }
    model.load_state_dict(best["state"])
    threshold = calibrate_threshold(val["label"], best["p_val"])
    meta = {
        "student": asdict(student_cfg),
        "distill": asdict(cfg),
        "teachers": sorted(cache_paths) if use_kd else [],
        "threshold": threshold,
        "threshold_source": "validation split, max balanced accuracy",
        "best_epoch": best["epoch"],
        "val_ap": best["ap"],
        "history": history,
        "train_images": int(len(train)),
        "preprocess": preprocess or {},
    }
    save_student(model.cpu(), meta, out_dir)
    log.info(
        "student saved to %s (best epoch %d, val AP %.4f, threshold %.4f)",
        out_dir,
        best["epoch"],
        best["ap"],
        threshold,
    )
    return meta


def save_student(model: torch.nn.Module, meta: dict, out_dir: str | Path) -> None:
    from safetensors.torch import save_file

    with atomic_dir(out_dir) as tmp:
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        write_json(tmp / "student.json", meta)


def load_student(model_dir: str | Path):
    """(model, meta) from a folder written by :func:`save_student` (safetensors only)."""
    from safetensors.torch import load_file

    from sidflow.io import read_json

    meta = read_json(Path(model_dir) / "student.json")
    cfg = StudentConfig(**meta["student"])
    model = create_student(cfg.arch, cfg)
    model.load_state_dict(load_file(str(Path(model_dir) / "model.safetensors")))
    return model.eval(), meta
