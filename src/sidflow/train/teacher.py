"""Teacher fine-tuning step: teach a captioner to say "real" or "fake".

    finetune_teacher("vitgpt2", TeacherConfig(), FinetuneConfig(), manifests, processed, "results/teachers/vitgpt2")

Trains on the ``train`` split of the given generators with class-balanced
sampling, reports validation loss and caption-score accuracy per epoch, and saves
the model (safetensors), tokenizer and a card with the checkpoint's content hash.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sidflow.data.loading import JpegDataset, load_images
from sidflow.devices import autocast, seed_everything, select_device
from sidflow.io import atomic_dir, hash_tree, write_json
from sidflow.models.teachers import CaptionTeacher, TeacherConfig, create_teacher
from sidflow.train.common import balanced_sampler, warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    epochs: int = 4
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "auto"


def evaluate_teacher(teacher: CaptionTeacher, loader, device) -> dict:
    ys, ps, unknown = [], [], 0
    for x, y, _ in loader:
        out = teacher.score(x.to(device))
        ys.append(y.numpy())
        ps.append(out["p_fake"].cpu().numpy())
        unknown += sum(teacher.caption_to_class(c) is None for c in out["captions"])
    y, p = np.concatenate(ys), np.concatenate(ps)
    return {
        "accuracy": float(((p >= 0.5) == y).mean()),
        "n": int(len(y)),
        "other_captions": int(unknown),
    }


def finetune_teacher(
    name: str,
    cfg: TeacherConfig,
    train_cfg: FinetuneConfig,
    manifests: list[str],
    processed_dirs: list[str],
    out_dir: str | Path,
) -> dict:
    seed_everything(train_cfg.seed)
    device = select_device(train_cfg.device)
    teacher = create_teacher(name, cfg)
    teacher.model.to(device)
    train = load_images(manifests, processed_dirs, ["train"])
    val = load_images(manifests, processed_dirs, ["val"])
    mean, std = teacher.image_mean, teacher.image_std
    train_loader = torch.utils.data.DataLoader(
        JpegDataset(train["jpeg"], train["label"], mean, std, augment=True),
        batch_size=train_cfg.batch_size,
        sampler=balanced_sampler(train["label"], train_cfg.seed),
    )
    val_loader = torch.utils.data.DataLoader(
        JpegDataset(val["jpeg"], val["label"], mean, std), batch_size=2 * train_cfg.batch_size
    )
    opt = torch.optim.AdamW(
        teacher.trainable_parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay
    )
    steps = max(1, train_cfg.epochs * len(train_loader))
    sched = warmup_cosine(opt, steps)
    history = []
    log.info("teacher %s: %d train / %d val images on %s", name, len(train), len(val), device)
    for epoch in range(train_cfg.epochs):
        teacher.model.train()
        t0, losses = time.time(), []
        for x, y, _ in train_loader:
            with autocast(device):
                loss = teacher.loss(x.to(device), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(teacher.trainable_parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        metrics = evaluate_teacher(teacher, val_loader, device)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val": metrics,
                        "seconds": round(time.time() - t0, 2)})  # fmt: skip
        log.info("teacher %s epoch %d: loss %.4f val %s", name, epoch + 1, np.mean(losses), metrics)
    teacher.model.to("cpu")
    with atomic_dir(out_dir) as tmp:
        teacher.save(tmp)
        card = {
            "teacher": name,
            "config": asdict(cfg),
            "finetune": asdict(train_cfg),
            "train_images": int(len(train)),
            "val_images": int(len(val)),
            "history": history,
            "checkpoint_hash": hash_tree(tmp / "model"),
        }
        write_json(tmp / "card.json", card)
    return card
