"""RINE's training augmentation, drawn reproducibly per (seed, view, image).

The paper (after Wang et al. 2020) blurs with probability ``blur_prob`` (sigma uniform
in ``blur_sigma``) and then re-encodes as JPEG with probability ``jpeg_prob`` (quality
uniform in ``jpeg_quality``). Because RINE trains on cached CLIP tokens, each training
image is cached under a few seeded draws ("views"); an epoch picks one view per image.
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
}


def draw_chain(rng: np.random.Generator, spec: dict) -> list[dict]:
    """One random augmentation as a perturbation chain (possibly empty)."""
    spec = {**DEFAULT_AUGMENT, **(spec or {})}
    chain: list[dict] = []
    if rng.random() < spec["blur_prob"]:
        lo, hi = spec["blur_sigma"]
        sigma = float(rng.uniform(lo, hi))
        if sigma > 0:
            chain.append({"blur": sigma})
    if rng.random() < spec["jpeg_prob"]:
        lo, hi = spec["jpeg_quality"]
        chain.append({"jpeg": int(rng.integers(lo, hi + 1))})
    return chain


def view_rng(seed: int, view: int, image_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, view, zlib.crc32(image_id.encode())])


def augmented(arr: np.ndarray, image_id: str, view: int, seed: int, spec: dict) -> np.ndarray:
    """View ``view`` of one H x W x 3 uint8 image: the same draw on every run."""
    return apply_chain(arr, draw_chain(view_rng(seed, view, image_id), spec))
