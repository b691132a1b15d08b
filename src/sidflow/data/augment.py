"""RINE's training augmentation, drawn reproducibly per (seed, view, image).

As the reference code (mever-team/rine ``data_augment``, after Wang et al. 2020) draws it
(``reference: true``, the default): with probability ``blur_prob`` a Gaussian blur (scipy,
per channel) of sigma uniform in ``blur_sigma``; then with probability ``jpeg_prob`` a JPEG
re-encode at a quality *chosen* from ``jpeg_quality`` (30 or 100) by an encoder chosen from
OpenCV and PIL; then a random ``crop`` (side in pixels, 0 = none) and a horizontal flip with
probability 0.5 (``flip``). ``reference: false`` keeps sidflow's earlier draws (PIL blur,
quality uniform in the range, PIL encoder). Because RINE trains on cached CLIP tokens, each
training image is cached under a few seeded draws ("views"); an epoch picks one per image.
"""

from __future__ import annotations

import zlib

import numpy as np

from sidflow.data.perturb import apply_chain

DEFAULT_AUGMENT = {
    "blur_prob": 0.5,
    "blur_sigma": [0.0, 3.0],
    "jpeg_prob": 0.5,
    "jpeg_quality": [30, 100],
    "reference": True,
    "crop": 0,
    "flip": True,
}


def draw_chain(rng: np.random.Generator, spec: dict) -> list[dict]:
    """One random blur/JPEG augmentation as a perturbation chain (possibly empty)."""
    spec = {**DEFAULT_AUGMENT, **(spec or {})}
    ref = spec["reference"]
    chain: list[dict] = []
    if rng.random() < spec["blur_prob"]:
        lo, hi = spec["blur_sigma"]
        sigma = float(rng.uniform(lo, hi))
        if sigma > 0:
            chain.append({"gaussian" if ref else "blur": sigma})
    if rng.random() < spec["jpeg_prob"]:
        lo, hi = spec["jpeg_quality"]
        if ref:
            encoder = ("jpeg_cv2", "jpeg")[int(rng.integers(2))]
            chain.append(
                {encoder: int(spec["jpeg_quality"][int(rng.integers(len(spec["jpeg_quality"])))])}
            )
        else:
            chain.append({"jpeg": int(rng.integers(lo, hi + 1))})
    return chain


def view_rng(seed: int, view: int, image_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, view, zlib.crc32(image_id.encode())])


def crop_flip(arr: np.ndarray, rng: np.random.Generator, crop: int, flip: bool) -> np.ndarray:
    """A random ``crop`` x ``crop`` window (0: the whole image) and a horizontal flip with
    probability 0.5 (``flip``); an image smaller than ``crop`` is an error naming both sizes."""
    if crop:
        h, w = arr.shape[:2]
        if h < crop or w < crop:
            raise ValueError(f"augment.crop {crop} is larger than the {h}x{w} processed image")
        y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        arr = arr[y : y + crop, x : x + crop]
    if flip and rng.random() < 0.5:
        arr = arr[:, ::-1]
    return np.ascontiguousarray(arr)


def augmented(arr: np.ndarray, image_id: str, view: int, seed: int, spec: dict) -> np.ndarray:
    """View ``view`` of one H x W x 3 uint8 image: the same draw on every run."""
    spec = {**DEFAULT_AUGMENT, **(spec or {})}
    rng = view_rng(seed, view, image_id)
    out = apply_chain(arr, draw_chain(rng, spec))
    return crop_flip(out, rng, int(spec["crop"]), bool(spec["flip"])) if spec["reference"] else out
