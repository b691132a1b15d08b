"""Read manifests + processed shards into memory and into torch tensors.

Training and scoring read the processed JPEG bytes joined to the manifest on
``image_id``; nothing re-reads the raw files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from sidflow.data.images import decode_jpeg_array
from sidflow.data.preprocess import part_files


def load_images(
    manifest_paths: Sequence[str | Path | pd.DataFrame],
    processed_dirs: Sequence[str | Path],
    splits: Sequence[str] | None = None,
    fold: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """Manifest rows (optionally only ``splits``) with their processed ``jpeg`` bytes.

    Each manifest is a Parquet path or an already-loaded manifest DataFrame. ``fold`` =
    ``(f, k)``: the splits as k-fold model ``f`` sees them (:func:`sidflow.data.folds.fold_view`)."""
    if len(manifest_paths) != len(processed_dirs):
        raise ValueError("one processed folder per manifest is needed")
    frames = []
    for mpath, pdir in zip(manifest_paths, processed_dirs, strict=True):
        man = mpath if isinstance(mpath, pd.DataFrame) else pd.read_parquet(mpath)
        if fold is not None:
            from sidflow.data.folds import fold_view

            man = fold_view(
                man, *fold, source=str(mpath) if not isinstance(mpath, pd.DataFrame) else "manifest"
            )
        if splits is not None:
            man = man[man["split"].isin(list(splits))]
        if man.empty:
            continue
        wanted = set(man["image_id"])
        parts = []
        for part in part_files(pdir):
            try:
                t = pq.read_table(part, columns=["image_id", "jpeg"]).to_pandas()
            except Exception as exc:  # noqa: BLE001 - say which file and how to rebuild it
                raise ValueError(
                    f"{part}: unreadable processed shard ({type(exc).__name__}: {exc}); remove {pdir} and "
                    f"rerun the pipeline (or `snakemake --forcerun preprocess`) to rebuild it"
                ) from None
            parts.append(t[t["image_id"].isin(wanted)])
        jpegs = pd.concat(parts, ignore_index=True).drop_duplicates("image_id")
        merged = man.merge(jpegs, on="image_id", how="left", validate="one_to_one")
        missing = merged["jpeg"].isna().sum()
        if missing:
            name = "manifest" if isinstance(mpath, pd.DataFrame) else mpath
            raise ValueError(f"{name}: {missing} manifest rows have no processed image in {pdir}")
        frames.append(merged)
    if not frames:
        raise ValueError(f"no images in splits {splits} of {list(manifest_paths)}")
    return pd.concat(frames, ignore_index=True)


def channel_stat(v):
    """A normalisation mean/std as given (one float) or per channel (3 values -> 1x3x1x1)."""
    if isinstance(v, (list, tuple)):
        if len(v) != 3:
            raise ValueError(f"a per-channel mean/std needs 3 values, got {list(v)}")
        return torch.tensor([float(x) for x in v]).view(1, 3, 1, 1)
    return float(v)


def to_tensor(jpegs: Sequence[bytes], mean=0.5, std=0.5) -> torch.Tensor:
    """Decode JPEG bytes to a float tensor N x 3 x H x W normalised by (x/255-mean)/std
    (``mean``/``std``: one value, or three per channel, e.g. ImageNet's)."""
    arr = np.stack([decode_jpeg_array(j) for j in jpegs]).astype(np.float32) / 255.0
    return (torch.from_numpy(arr).permute(0, 3, 1, 2) - channel_stat(mean)) / channel_stat(std)


class JpegDataset(torch.utils.data.Dataset):
    """Decodes processed JPEGs lazily; yields (image, label, index)."""

    def __init__(
        self,
        jpegs: Sequence[bytes],
        labels: Sequence[int],
        mean=0.5,
        std=0.5,
        augment: bool = False,
    ):
        self.jpegs, self.labels = list(jpegs), torch.tensor(np.asarray(labels), dtype=torch.long)
        self.mean, self.std, self.augment = mean, std, augment

    def __len__(self) -> int:
        return len(self.jpegs)

    def __getitem__(self, i: int):
        x = to_tensor([self.jpegs[i]], self.mean, self.std)[0]
        if self.augment and torch.rand(()) < 0.5:
            x = torch.flip(x, dims=[2])
        return x, self.labels[i], i


class ImageBank:
    """Training images as a uint8 N x 3 x H x W tensor, decoded once when it fits in
    ``max_bytes`` (else decoded per batch). ``batch(idx)`` returns normalised floats."""

    def __init__(self, jpegs: Sequence[bytes], mean=0.5, std=0.5, max_bytes: int = 4 << 30):
        self.jpegs, self.mean, self.std = list(jpegs), mean, std
        self.decoded = None
        if self.jpegs:
            h, w, _ = decode_jpeg_array(self.jpegs[0]).shape
            if len(self.jpegs) * h * w * 3 <= max_bytes:
                arr = np.stack([decode_jpeg_array(j) for j in self.jpegs])
                self.decoded = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    @classmethod
    def from_arrays(cls, arr: np.ndarray, mean=0.5, std=0.5) -> ImageBank:
        """A bank over already-decoded N x H x W x 3 uint8 images (e.g. perturbed ones)."""
        bank = cls([], mean, std)
        bank.jpegs = [b""] * len(arr)
        bank.decoded = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()
        return bank

    def __len__(self) -> int:
        return len(self.jpegs)

    def augmented_batch(
        self, idx, image_ids: Sequence[str], view: int, seed: int, spec: dict
    ) -> torch.Tensor:
        """Normalised floats of images ``idx``, each under its own seeded blur/JPEG draw
        (:func:`sidflow.data.augment.augmented`: the same draw for the same image, view and
        seed on every run) and a random flip (``spec["flip"]``); the crop is not used."""
        from sidflow.data.augment import augmented

        arrays = []
        for i in idx:
            arr = (self.decoded[i].permute(1, 2, 0).numpy() if self.decoded is not None
                   else decode_jpeg_array(self.jpegs[i]))  # fmt: skip
            arrays.append(
                augmented(arr, image_ids[i], view, seed, {**spec, "crop": 0, "reference": True})
            )
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
        return (x - channel_stat(self.mean)) / channel_stat(self.std)

    def batch(self, idx, augment: bool = False) -> torch.Tensor:
        if self.decoded is not None:
            x = (
                self.decoded[torch.as_tensor(idx)].float() / 255.0 - channel_stat(self.mean)
            ) / channel_stat(self.std)
        else:
            x = to_tensor([self.jpegs[i] for i in idx], self.mean, self.std)
        if augment:  # random horizontal flip, from the (per-epoch seeded) torch RNG
            flip = torch.rand(len(x)) < 0.5
            x[flip] = torch.flip(x[flip], dims=[3])
        return x


def random_translate(x: torch.Tensor, pixels: int) -> torch.Tensor:
    """Each image of the N x C x H x W batch shifted by its own random (dy, dx) in
    [-pixels, pixels], the uncovered border filled by reflection (the "pad and random crop"
    augmentation of CIFAR training, done on the whole batch with one gather)."""
    n, _, h, w = x.shape
    if pixels >= min(h, w):
        raise ValueError(f"translate={pixels} pixels needs images larger than that, got {h}x{w}")
    padded = torch.nn.functional.pad(x, (pixels,) * 4, mode="reflect")
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n))
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # n x 1 x h x 1
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # n x 1 x 1 x w
    batch = torch.arange(n)[:, None, None, None]
    chans = torch.arange(x.shape[1])[None, :, None, None]
    return padded[batch, chans, rows, cols]
