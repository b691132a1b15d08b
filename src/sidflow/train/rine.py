"""Train and score RINE on cached CLIP block tokens (never on images: CLIP is not re-run).

    meta = train_rine(manifests, train_features={"aug1": [...], "aug2": [...]},
                      val_features=[...none.parquet], settings={...}, seed=1234,
                      out_dir="results/demo/models/rine")
    score_rine(model_dir, manifest, features, "rine", out_path, perturbation="none")

Epochs are class-balanced (as for the student) and each training image is seen under one
of its cached augmented views, drawn from (seed, epoch). Adam, the paper's step decay
(/10 at ``lr_decay_epochs``); the epoch with the best validation AP is kept and its
threshold is calibrated on the validation split.
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
from sidflow.models.rine import RineConfig, create_rine, rine_loss
from sidflow.tables import SCORE_SPLITS, SCORES_SCHEMA, scores_table
from sidflow.thresholds import calibrate_threshold
from sidflow.train.common import balanced_epoch

log = logging.getLogger(__name__)


@dataclass
class RineTrainConfig:
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
    seed: int = 0


def _aligned(ids: pd.Series, tokens: np.ndarray, wanted: pd.Series, what: str) -> np.ndarray:
    pos = pd.Series(np.arange(len(ids)), index=ids.to_numpy())
    pos = pos[~pos.index.duplicated()]
    missing = ~wanted.isin(pos.index)
    if missing.any():
        raise ValueError(f"{what}: {int(missing.sum())} images have no cached CLIP tokens")
    return tokens[pos.loc[wanted.to_numpy()].to_numpy()]


@torch.no_grad()
def predict_rine(model, tokens: np.ndarray, device, batch_size: int = 1024) -> np.ndarray:
    model.eval()
    out = []
    for lo in range(0, len(tokens), batch_size):
        x = torch.from_numpy(tokens[lo : lo + batch_size]).to(device)
        out.append(torch.sigmoid(model(x)["logit"]).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def train_rine(
    manifests: list[str | Path], train_features: dict[str, list[str | Path]],
    val_features: list[str | Path], settings: dict, seed: int, out_dir: str | Path,
    backbone_card: str | Path | None = None, device: str = "auto",
) -> dict:  # fmt: skip
    """Run the rine_train step; writes ``model.safetensors`` + ``card.json`` atomically."""
    from safetensors.torch import save_file
    from sklearn.metrics import average_precision_score

    cfg = RineTrainConfig(**{**settings, "seed": seed})
    man = pd.concat([pd.read_parquet(m) for m in manifests], ignore_index=True)
    train, val = man[man["split"] == "train"], man[man["split"] == "val"]
    if train.empty or val.empty or val["label"].nunique() < 2:
        raise ValueError("RINE needs training images and validation images of both classes")
    views = sorted(train_features)
    x_views = [
        _aligned(*read_tokens(train_features[v]), train["image_id"], f"view {v}") for v in views
    ]
    vi, vt = read_tokens(val_features)
    x_val = _aligned(vi, vt, val["image_id"], "validation")
    y = train["label"].to_numpy().astype(np.int64)
    n_blocks, dim = x_views[0].shape[1:]

    seed_everything(seed)
    dev = select_device(device)
    rcfg = RineConfig(
        n_blocks=n_blocks, dim=dim, nproj=cfg.nproj, proj_dim=cfg.proj_dim, dropout=cfg.dropout
    )
    model = create_rine(rcfg)
    if cfg.standardize:
        stacked = np.concatenate(x_views)
        model.token_mean.copy_(torch.from_numpy(stacked.mean(0)))
        model.token_std.copy_(torch.from_numpy(stacked.std(0) + 1e-6))
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history, best = [], {"ap": -1.0, "epoch": 0, "state": None, "p_val": None}
    for epoch in range(cfg.epochs):
        lr = cfg.lr / 10 ** sum(epoch + 1 >= e for e in cfg.lr_decay_epochs)
        for g in opt.param_groups:
            g["lr"] = lr
        order = balanced_epoch(y, seed, epoch)
        pick = np.random.default_rng([seed, epoch, 7]).integers(0, len(views), len(order))
        model.train()
        sums = {"loss": 0.0, "bce_loss": 0.0, "contrastive_loss": 0.0}
        for lo in range(0, len(order), cfg.batch_size):
            idx, vw = order[lo : lo + cfg.batch_size], pick[lo : lo + cfg.batch_size]
            xb = np.stack([x_views[v][i] for i, v in zip(idx, vw, strict=True)])
            out = model(torch.from_numpy(xb).to(dev))
            losses = rine_loss(
                out, torch.from_numpy(y[idx]).to(dev), cfg.contrastive_weight, cfg.temperature
            )
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            opt.step()
            for k in sums:
                sums[k] += float(losses[k].detach())
        n_batches = -(-len(order) // cfg.batch_size)
        sums = {"loss": sums["loss"] / n_batches, "bce_per_image": sums["bce_loss"] / len(order),
                "contrastive_loss": sums["contrastive_loss"] / n_batches}  # fmt: skip
        p_val = predict_rine(model, x_val, dev)
        ap = float(average_precision_score(val["label"], p_val))
        history.append({"epoch": epoch + 1, "lr": lr, **sums, "val_ap": ap,
                        "block_importance": model.block_importance().tolist()})  # fmt: skip
        log.info("epoch %d: loss/batch %.4f (bce/image %.4f, contrastive %.4f), val AP %.4f", epoch + 1,
                 sums["loss"], sums["bce_per_image"], sums["contrastive_loss"], ap)  # fmt: skip
        if ap > best["ap"]:
            best = {"ap": ap, "epoch": epoch + 1, "p_val": p_val,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}  # fmt: skip
    model.load_state_dict(best["state"])
    meta = {
        "detector": "rine",
        "rine": asdict(rcfg),
        "train": asdict(cfg),
        "views": views,
        "threshold": calibrate_threshold(val["label"], best["p_val"]),
        "threshold_source": "validation split, max balanced accuracy",
        "best_epoch": best["epoch"],
        "val_ap": best["ap"],
        "block_importance": model.block_importance().tolist(),
        "history": [{k: v for k, v in h.items() if k != "block_importance"} for h in history],
        "importance_history": [h["block_importance"] for h in history],
        "train_images": int(len(train)),
        "backbone": read_json(backbone_card) if backbone_card else None,
    }
    with atomic_dir(out_dir) as tmp:
        state = {k: v.contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        write_json(tmp / "card.json", meta)
    log.info("RINE saved to %s (best epoch %d, val AP %.4f)", out_dir, best["epoch"], best["ap"])
    return meta


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
    from sidflow.io import write_parquet

    model, _ = load_rine(model_dir)
    dev = select_device(device)
    model.to(dev)
    man = pd.read_parquet(manifest)
    man = man[man["split"].isin(SCORE_SPLITS if perturbation == "none" else ("test",))]
    ids, toks = read_tokens([features])
    p = predict_rine(model, _aligned(ids, toks, man["image_id"], str(features)), dev)
    write_parquet(out_path, scores_table(man, p, detector, perturbation), SCORES_SCHEMA)
    return len(man)
