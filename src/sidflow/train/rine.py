"""Train and score RINE on cached CLIP block tokens (never on images: CLIP is not re-run).

    meta = train_rine(manifests, train_features={"aug1": [...], "aug2": [...]},
                      val_features=[...none.parquet], settings={...}, seed=1234,
                      out_dir="results/demo/models/rine")
    score_rine(model_dir, manifest, features, "rine", out_path, perturbation="none")

Epochs are class-balanced (as for the student) and each training image is seen under one
of its cached augmented views, drawn from (seed, epoch). Adam, the paper's step decay
(/10 at ``lr_decay_epochs``). The epochs run in the shared loop (:mod:`sidflow.train.loop`):
the epoch with the best validation AP is kept and its threshold is calibrated on the
validation split; with ``checkpoint_dir`` every epoch is checkpointed and a killed run resumes.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sidflow.cache.clip_features import read_tokens
from sidflow.devices import seed_everything, select_device
from sidflow.io import atomic_dir, read_json, write_json
from sidflow.models.rine import RineConfig, create_rine, published_state_dict, rine_loss
from sidflow.tables import SCORE_SPLITS, SCORES_SCHEMA, scores_table
from sidflow.train.common import balanced_epoch
from sidflow.train.loop import (
    Checkpoint,
    LoopState,
    card_fields,
    fingerprint,
    fit,
    keep_best,
    train_one_epoch,
    validate,
)
from sidflow.train.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class RineTrainConfig:
    """RINE's training settings (a RINE detector's settings in the experiment; ``seed`` from the run)."""

    nproj: int = 4
    proj_dim: int = 1024
    dropout: float = 0.5
    contrastive_weight: float = 0.2
    temperature: float = 0.07
    lr: float = 1e-3
    lr_decay_epochs: list[int] = field(default_factory=lambda: [6, 11])
    epochs: int = 1
    batch_size: int = 128
    standardize: bool = False  # z-score tokens per (block, feature) with training statistics
    importance: str = "learned"  # learned | mean | last (the paper's block-combination ablations)
    train_fraction: float = 1.0  # < 1: a class-balanced seeded subset of the training images
    weights: str | None = None  # the paper's published trainable part (model_*_trainable.pth)
    finetune: bool = False  # with weights: train further (else evaluate them as published)
    seed: int = 0


def fraction_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-balanced ``fraction`` of the samples (the paper's
    training-set-size ablation): the same share of each class, at least one per class."""
    rng = np.random.default_rng([seed, 11])
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        keep.append(rng.choice(idx, max(1, round(fraction * len(idx))), replace=False))
    return np.sort(np.concatenate(keep))


def _aligned(ids: pd.Series, tokens: np.ndarray, wanted: pd.Series, what: str) -> np.ndarray:
    pos = pd.Series(np.arange(len(ids)), index=ids.to_numpy())
    pos = pos[~pos.index.duplicated()]
    missing = ~wanted.isin(pos.index)
    if missing.any():
        raise ValueError(f"{what}: {int(missing.sum())} images have no cached CLIP tokens")
    return tokens[pos.loc[wanted.to_numpy()].to_numpy()]


@torch.no_grad()
def predict_rine(model, tokens: np.ndarray, device, batch_size: int = 1024) -> np.ndarray:
    """p_fake per image from its tokens (N x blocks x dim), or from several test-time crops
    (N x crops x blocks x dim): their logits averaged, then the sigmoid (as the reference)."""
    model.eval()
    out = []
    for lo in range(0, len(tokens), batch_size):
        x = torch.from_numpy(tokens[lo : lo + batch_size]).to(device)
        if x.dim() == 4:
            logit = model(x.flatten(0, 1))["logit"].view(x.shape[0], x.shape[1]).mean(1)
        else:
            logit = model(x)["logit"]
        out.append(torch.sigmoid(logit).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _load_tokens(manifests, train_features: dict, val_features: list):
    """(train rows, val rows, view names, tokens of each view, validation tokens)."""
    man = pd.concat([pd.read_parquet(m) for m in manifests], ignore_index=True)
    train, val = man[man["split"] == "train"], man[man["split"] == "val"]
    if train.empty or val.empty or val["label"].nunique() < 2:
        raise ValueError("RINE needs training images and validation images of both classes")
    views = sorted(train_features)
    x_views = [
        _aligned(*read_tokens(train_features[v]), train["image_id"], f"view {v}") for v in views
    ]
    vi, vt = read_tokens(val_features)
    return train, val, views, x_views, _aligned(vi, vt, val["image_id"], "validation")


class OnlineViews:
    """``rine.online``: every epoch draws a fresh augmentation of each training image and runs
    the frozen CLIP on it (the reference's on-the-fly training; worth it on a GPU) instead of
    picking one of a few cached views (cheap on a CPU; :mod:`sidflow.data.augment`)."""

    def __init__(self, train: pd.DataFrame, manifests, processed_dirs, backbone_dir, augment: dict,
                 seed: int, device, batch_size: int = 64):  # fmt: skip
        from sidflow.data.loading import load_images
        from sidflow.models.clip import load_clip

        images = load_images(manifests, processed_dirs, ["train"]).set_index("image_id")
        self.jpegs = images.loc[train["image_id"].to_numpy(), "jpeg"].to_numpy()
        self.ids = train["image_id"].to_numpy()
        self.augment, self.seed, self.device, self.batch_size = augment, seed, device, batch_size
        model, cfg = load_clip(backbone_dir)
        self.clip, self.image_size = model.to(device).eval(), cfg.image_size

    def tokens(self, idx: np.ndarray, epoch: int) -> np.ndarray:
        """Block tokens (B x blocks x dim) of images ``idx`` under epoch ``epoch``'s draw."""
        from sidflow.cache.clip_features import clip_tokens
        from sidflow.data.augment import augmented
        from sidflow.data.images import decode_jpeg_array

        view = 1_000_000 + epoch  # never one of the cached views (aug1..augK)
        arr = np.stack([augmented(decode_jpeg_array(self.jpegs[i]), self.ids[i], view, self.seed, self.augment)
                        for i in idx])  # fmt: skip
        return clip_tokens(self.clip, self.image_size, self.device, arr, self.batch_size)


class _RineTrainee:
    """RINE as :func:`sidflow.train.loop.fit` trains it (see :class:`~sidflow.train.loop.Trainee`):
    each training image is seen under one of its cached views, drawn from (seed, epoch)."""

    name = "rine"

    def __init__(self, model, cfg: RineTrainConfig, x_views, y, x_val, device, online=None):
        self.model, self.cfg, self.device = model, cfg, device
        self.x_views, self.y, self.x_val, self.online = x_views, y, x_val, online
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def _step(self, batch) -> dict[str, torch.Tensor]:
        idx, vw = batch
        if self.online is not None:  # a fresh augmentation draw of this epoch, through CLIP
            xb = self.online.tokens(idx, int(vw[0]))
        else:
            xb = np.stack([self.x_views[v][i] for i, v in zip(idx, vw, strict=True)])
        out = self.model(torch.from_numpy(xb).to(self.device))
        y = torch.from_numpy(self.y[idx]).to(self.device)
        return rine_loss(out, y, self.cfg.contrastive_weight, self.cfg.temperature)

    def train_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        lr = cfg.lr / 10 ** sum(epoch + 1 >= e for e in cfg.lr_decay_epochs)  # step decay
        for g in self.opt.param_groups:
            g["lr"] = lr
        order = balanced_epoch(self.y, cfg.seed, epoch)
        pick = np.random.default_rng([cfg.seed, epoch, 7]).integers(
            0, len(self.x_views), len(order)
        )
        if self.online is not None:
            pick = np.full(len(order), epoch)  # online: the epoch's own draw for every image
        batches = (((order[lo : lo + cfg.batch_size], pick[lo : lo + cfg.batch_size]), 1)
                   for lo in range(0, len(order), cfg.batch_size))  # fmt: skip
        progress = Progress(f"rine epoch {epoch + 1}", -(-len(order) // cfg.batch_size))
        sums, n_batches = train_one_epoch(self.model, self._step, batches, self.opt,
                                          keys=("loss", "bce_loss", "contrastive_loss"),
                                          progress=progress, images=lambda b: len(b[0]))  # fmt: skip
        return {"lr": lr, "loss": sums["loss"] / n_batches, "bce_per_image": sums["bce_loss"] / len(order),
                "contrastive_loss": sums["contrastive_loss"] / n_batches}  # fmt: skip

    def predict_val(self) -> dict[str, np.ndarray]:
        return {"p_fake": predict_rine(self.model, self.x_val, self.device)}

    def val_columns(self, preds: dict[str, np.ndarray]) -> dict:
        return {"block_importance": self.model.block_importance().tolist()}


def train_rine(
    manifests: list[str | Path], train_features: dict[str, list[str | Path]],
    val_features: list[str | Path], settings: dict, seed: int, out_dir: str | Path,
    backbone_card: str | Path | None = None, device: str = "auto",
    checkpoint_dir: str | Path | None = None, preprocess: dict | None = None, test_crop: str = "resize",
    online: dict | None = None,
) -> dict:  # fmt: skip
    """Run the rine_train step; writes ``model.safetensors`` + ``card.json`` atomically.
    With ``checkpoint_dir`` every epoch is checkpointed there and a killed run resumes.
    ``preprocess`` and ``test_crop`` are recorded so `sidflow predict` applies them.
    ``online`` (``{"processed": [...], "augment": {...}}``, with ``backbone_card``): train on
    fresh augmentation draws through CLIP every epoch (:class:`OnlineViews`); ``train_features``
    then only gives the clean training tokens (shapes, standardisation statistics)."""
    cfg = RineTrainConfig(**{**settings, "seed": seed})
    train, val, views, x_views, x_val = _load_tokens(manifests, train_features, val_features)
    y = train["label"].to_numpy().astype(np.int64)
    n_blocks, dim = x_views[0].shape[1:]

    seed_everything(seed)
    dev = select_device(device)
    if cfg.train_fraction < 1:
        keep = fraction_subset(y, cfg.train_fraction, seed)
        train, y, x_views = train.iloc[keep], y[keep], [x[keep] for x in x_views]
    rcfg = RineConfig(n_blocks=n_blocks, dim=dim, nproj=cfg.nproj, proj_dim=cfg.proj_dim,
                      dropout=cfg.dropout, importance=cfg.importance)  # fmt: skip
    model = create_rine(rcfg)
    if cfg.weights:
        published = torch.load(cfg.weights, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(published_state_dict(published, model), strict=True)
        except ValueError as exc:
            raise ValueError(
                f"{cfg.weights}: {exc} (tokens here: {n_blocks} blocks x {dim})"
            ) from None
        log.info(
            "RINE: published weights from %s%s",
            cfg.weights,
            " (fine-tuned)" if cfg.finetune else "",
        )
    if cfg.standardize and not cfg.weights:
        stacked = np.concatenate(x_views)
        model.token_mean.copy_(torch.from_numpy(stacked.mean(0)))
        model.token_std.copy_(torch.from_numpy(stacked.std(0) + 1e-6))
    views_online = None
    if online:
        views_online = OnlineViews(train, manifests, online["processed"], Path(backbone_card).parent,
                                   online.get("augment") or {}, seed, dev)  # fmt: skip
        views = ["online"]
    task = _RineTrainee(model.to(dev), cfg, x_views, y, x_val, dev, views_online)
    state = LoopState(
        fingerprint=fingerprint([asdict(rcfg), asdict(cfg), views], train["image_id"].tolist())
    )
    ckpt = None
    if checkpoint_dir:
        ckpt = Checkpoint(Path(checkpoint_dir), {"model": model}, {"optimizer": task.opt})
        state = ckpt.resume(state)
    if cfg.weights and not cfg.finetune:  # the published model as it is: validate, no training
        preds, ap = validate(task.predict_val, val["label"])
        keep_best(state, model, ap, preds)
    else:
        state = fit(task, state, epochs=cfg.epochs, val_labels=val["label"], checkpoint=ckpt)
    meta = {
        "detector": "rine", "rine": asdict(rcfg), "train": asdict(cfg), "views": views,
        **card_fields(state, val["label"], len(train)),
        "block_importance": model.block_importance().tolist(),
        "history": [{k: v for k, v in h.items() if k != "block_importance"} for h in state.history],
        "importance_history": [h["block_importance"] for h in state.history],
        "backbone": read_json(backbone_card) if backbone_card else None,
        # what `sidflow predict` needs to score raw images as the run did
        "backbone_dir": str(Path(backbone_card).parent) if backbone_card else None,
        "preprocess": dict(preprocess or {}), "test_crop": test_crop,
    }  # fmt: skip
    _save_rine(model, meta, out_dir)
    if ckpt is not None:
        ckpt.remove()
    log.info(
        "RINE saved to %s (best epoch %d, val AP %.4f)", out_dir, state.best_epoch, state.best_ap
    )
    return meta


def _save_rine(model, card: dict, out_dir: str | Path) -> None:
    from safetensors.torch import save_file

    with atomic_dir(out_dir) as tmp:
        state = {k: v.contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        write_json(tmp / "card.json", card)


def load_rine(model_dir: str | Path):
    """(model, card) from a folder written by :func:`train_rine` (safetensors only)."""
    from safetensors.torch import load_file

    card = read_json(Path(model_dir) / "card.json")
    model = create_rine(RineConfig(**card["rine"]))
    model.load_state_dict(load_file(str(Path(model_dir) / "model.safetensors")))
    return model.eval(), card


def score_rine(
    model_dir: str | Path, manifest: str | Path, features: str | Path, detector: str,
    out_path: str | Path, perturbation: str = "none", device: str = "auto",
) -> int:  # fmt: skip
    """RINE's scores table for one generator from its cached tokens (``features`` is the
    ``none`` view for clean val/test scores, or the perturbation's view: test only)."""
    views = {perturbation: (features, out_path)}
    return score_rine_views(model_dir, manifest, detector, views, device)[perturbation]


def score_rine_views(
    model_dir: str | Path, manifest: str | Path, detector: str,
    views: dict[str, tuple[str | Path, str | Path]], device: str = "auto",
) -> dict[str, int]:  # fmt: skip
    """The score_rine step: one generator's scores under every view ``{perturbation:
    (features, out_path)}``, loading the model once. Returns the rows written per view."""
    from sidflow.io import write_parquet

    model, _ = load_rine(model_dir)
    dev = select_device(device)
    model.to(dev)
    full, rows = pd.read_parquet(manifest), {}
    for perturbation, (features, out_path) in views.items():
        man = full[full["split"].isin(SCORE_SPLITS if perturbation == "none" else ("test",))]
        ids, toks = read_tokens([features])
        p = predict_rine(model, _aligned(ids, toks, man["image_id"], str(features)), dev)
        write_parquet(out_path, scores_table(man, p, detector, perturbation), SCORES_SCHEMA)
        rows[perturbation] = len(man)
    return rows
