"""CLIP feature cache: the CLS token of every encoder block, once per (backbone, image, view).

Output ``results/features/clip/<dataset>/<generator>/<view>.parquet``: ``image_id`` and
``tokens`` (``n_blocks * dim`` float32, row-major), with ``n_blocks``, ``dim`` and the
backbone's content hash in the file's schema metadata. Views:

* ``none``: the processed images of every split, unchanged (validation, test, scoring);
* ``aug<k>``: the training split under the k-th seeded draw of the paper's blur/JPEG
  augmentation (:mod:`sidflow.data.augment`);
* a perturbation name: the test split under that chain (robustness evaluation).

Rows are computed into an append-only :class:`~sidflow.cache.store.ChunkStore`
``<cache_root>/clip-<hash12>/<dataset>/<generator>/<view>-<params10>/`` (the rule passes
``cache_root``: ``results/features/.store``) keyed by the backbone hash and the view's
parameters, so added images cost only their rows, a killed job keeps its finished chunks,
and RINE's training and grids never re-run CLIP (:func:`sidflow.cache.store.cached_rows`).

Run it with ``snakemake results/features/clip/<dataset>/<generator>/<view>.parquet``; tests:
``python -m pytest -q -p no:cacheprovider tests/test_rine.py -k clip``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

import sidflow
from sidflow.cache.store import cached_rows, open_store
from sidflow.data.augment import augmented
from sidflow.data.images import decode_jpeg_array
from sidflow.data.perturb import apply_chain, check_chain
from sidflow.devices import select_device
from sidflow.io import read_json, write_parquet
from sidflow.models.clip import block_cls_tokens, clip_pixels, load_clip
from sidflow.tables import token_schema as tokens_schema


def view_splits(view: str) -> tuple[str, ...]:
    if view == "none":
        return ("train", "val", "test")
    if re.fullmatch(r"aug\d+", view):
        return ("train",)
    return ("test",)


TEST_CROPS = ("resize", "center", "tencrop")


def is_train_view(view: str) -> bool:
    return bool(re.fullmatch(r"aug\d+", view))


def test_crops(arr: np.ndarray, mode: str, size: int) -> np.ndarray:
    """The test-time crops of one H x W x 3 image, C x S x S x 3: ``resize`` (the whole image,
    resized later by the encoder's preprocessing), ``center`` (a centre S x S crop, no resize)
    or ``tencrop`` (torchvision's TenCrop: four corners + centre, and of the mirrored image)."""
    from torchvision.transforms.v2 import functional as TF

    if mode == "resize":
        return arr[None]
    h, w = arr.shape[:2]
    if h < size or w < size:
        raise ValueError(f"test_crop {mode}: the {h}x{w} processed image is smaller than the {size} px "
                         "encoder input (raise preprocess.image_size)")  # fmt: skip
    x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)
    crops = (
        [TF.center_crop(x, [size, size])]
        if mode == "center"
        else list(TF.ten_crop(x, [size, size]))
    )
    return torch.stack(crops).permute(0, 2, 3, 1).numpy()


def view_key(
    view: str, augment: dict | None, chain: list | None, seed: int, test_crop: str = "resize"
) -> str:
    """``<view>-<hash10 of its parameters>``: the view's store folder (a perturbation view
    must carry a valid chain)."""
    if view != "none" and not is_train_view(view):
        if not chain:
            raise ValueError(f"view {view!r} is a perturbation and needs its chain")
        check_chain(chain)
    if test_crop not in TEST_CROPS:
        raise ValueError(f"test_crop must be one of {TEST_CROPS}, got {test_crop!r}")
    spec = {"view": view, "augment": augment, "chain": chain, "seed": seed}
    if test_crop != "resize" and not is_train_view(view):
        spec["test_crop"] = test_crop  # (resize: the key every earlier store has)
    params = json.dumps(spec, sort_keys=True)
    return f"{view}-{hashlib.sha256(params.encode()).hexdigest()[:10]}"


def _view_images(images: pd.DataFrame, view: str, augment: dict, chain, seed: int) -> np.ndarray:
    arrs = [decode_jpeg_array(j) for j in images["jpeg"]]
    if view.startswith("aug") and view != "none":
        k = int(view[3:])
        arrs = [
            augmented(a, i, k, seed, augment) for a, i in zip(arrs, images["image_id"], strict=True)
        ]
    elif view != "none":
        arrs = [apply_chain(a, chain) for a in arrs]
    return np.stack(arrs)


def build_clip_features(
    backbone_dir: str | Path, manifest: str | Path, processed_dir: str | Path, out_path: str | Path,
    cache_root: str | Path, view: str = "none", augment: dict | None = None, chain: list | None = None,
    seed: int = 0, batch_size: int = 64, chunk_rows: int = 2048, device: str = "auto",
    test_crop: str = "resize",
) -> dict:  # fmt: skip
    """One (dataset, generator, view) of the clip_features step (see :func:`build_clip_views`)."""
    views = {view: (out_path, chain)}
    return build_clip_views(backbone_dir, manifest, processed_dir, views, cache_root, augment,
                            seed, batch_size, chunk_rows, device, test_crop)[view]  # fmt: skip


def build_clip_views(
    backbone_dir: str | Path, manifest: str | Path, processed_dir: str | Path,
    views: dict[str, tuple[str | Path, list | None]], cache_root: str | Path, augment: dict | None = None,
    seed: int = 0, batch_size: int = 64, chunk_rows: int = 2048, device: str = "auto",
    test_crop: str = "resize",
) -> dict[str, dict]:  # fmt: skip
    """The clip_features step for one (dataset, generator): every view ``{view: (out_path,
    chain)}`` (the encoder loaded once, only if a row is missing); ``cache_root``: the folder
    of the stores (the rule's ``params.cache_root``); ``test_crop``: how clean and perturbed
    views meet the encoder (:func:`test_crops`; training views are never cropped here). Returns
    a summary per view."""
    card = read_json(Path(backbone_dir) / "card.json")

    @functools.cache
    def clip():  # loaded only when a row is missing
        dev, (model, cfg) = select_device(device), load_clip(backbone_dir)
        return model.to(dev), cfg.image_size, dev

    done = {}
    for view, (out_path, chain) in views.items():
        crop = "resize" if is_train_view(view) else test_crop
        n_crops = {"resize": 1, "center": 1, "tencrop": 10}[crop]
        schema = tokens_schema(card["n_blocks"], card["dim"], card["checkpoint_hash"], n_crops)
        key = view_key(view, augment, chain, seed, test_crop)
        full, store = open_store(manifest, cache_root, f"clip-{card['checkpoint_hash'][:12]}", key)
        man = full[full["split"].isin(view_splits(view))]

        def compute(
            chunk: pd.DataFrame, view=view, chain=chain, crop=crop, n_crops=n_crops
        ) -> pd.DataFrame:
            arr = _view_images(chunk, view, augment or {}, chain, seed)
            model, size, dev = clip()
            if crop != "resize":
                arr = np.concatenate([test_crops(a, crop, size) for a in arr])
            flat = clip_tokens(model, size, dev, arr, batch_size).reshape(len(chunk), -1)
            return pd.DataFrame({"image_id": chunk["image_id"].to_numpy(), "tokens": list(flat),
                                 "view": view, "code_version": sidflow.code_version()})  # fmt: skip

        out, computed = cached_rows(
            store, man[["image_id"]], compute, schema, chunk_rows, processed_dir
        )
        write_parquet(out_path, out, schema)
        done[view] = {"rows": int(len(out)), "computed": computed, "view": view}
    return done


def clip_tokens(model, image_size: int, dev, arr: np.ndarray, batch_size: int) -> np.ndarray:
    """Block CLS tokens (N x n_blocks x dim, float32) of N x H x W x 3 uint8 images."""
    toks = []
    for lo in range(0, len(arr), batch_size):
        x = clip_pixels(arr[lo : lo + batch_size], image_size).to(dev)
        toks.append(block_cls_tokens(model, x).cpu().numpy())
    return np.concatenate(toks).astype(np.float32)


def read_tokens(paths: list[str | Path]) -> tuple[pd.Series, np.ndarray]:
    """``(image_ids, tokens N x n_blocks x dim)`` from one or more feature files
    (``N x n_crops x n_blocks x dim`` for ten-crop test views)."""
    ids, arrs, shape = [], [], None
    for p in paths:
        table = pq.read_table(p, columns=["image_id", "tokens"])
        meta = table.schema.metadata or {}
        if b"n_blocks" not in meta:
            raise ValueError(f"{p}: not a CLIP feature file (no n_blocks metadata)")
        s = (int(meta[b"n_blocks"]), int(meta[b"dim"]))
        if int(meta.get(b"n_crops", 1)) > 1:  # test-time crops: N x crops x blocks x dim
            s = (int(meta[b"n_crops"]), *s)
        if shape is not None and s != shape:
            raise ValueError(f"{p}: token shape {s} differs from {shape} (another backbone?)")
        shape = s
        col = table.column("tokens").combine_chunks()
        flat = col.values.to_numpy(zero_copy_only=False) if len(col) else np.zeros(0, np.float32)
        arrs.append(flat.reshape(len(col), *s))
        ids.append(table.column("image_id").to_pandas())
    if not arrs:
        raise ValueError("no feature files given")
    return pd.concat(ids, ignore_index=True), np.concatenate(arrs).astype(np.float32, copy=False)


def backbone_step(settings: dict, seed: int, out_dir: str | Path) -> dict:
    """The clip_backbone step: build (tiny) or load (hub id / folder) the frozen encoder,
    save it with safetensors and a card carrying its content hash and token shape."""
    from sidflow.io import atomic_dir, hash_tree, write_json
    from sidflow.models.clip import ClipConfig, build_clip, save_clip

    cfg = ClipConfig(checkpoint=settings.get("checkpoint", "tiny"), image_size=settings.get("image_size", 32),
                     tiny=dict(settings.get("tiny") or ClipConfig().tiny), seed=seed)  # fmt: skip
    model = build_clip(cfg)
    with torch.no_grad():
        probe = block_cls_tokens(model, torch.zeros(1, 3, cfg.image_size, cfg.image_size))
    with atomic_dir(out_dir) as tmp:
        save_clip(model, cfg, tmp)
        card = {"checkpoint": cfg.checkpoint, "checkpoint_hash": hash_tree(tmp / "model"),
                "n_blocks": int(probe.shape[1]), "dim": int(probe.shape[2]), "image_size": cfg.image_size,
                "params": int(sum(p.numel() for p in model.parameters()))}  # fmt: skip
        write_json(tmp / "card.json", card)
    return card
