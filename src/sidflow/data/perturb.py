"""Test-time perturbations for the robustness evaluation (one Snakemake wildcard each).

A perturbation is a named chain of operations from config, applied to the processed
image (what the detector would otherwise see)::

    perturbations:
      jpeg75: [{jpeg: 75}]                # PIL's encoder; {jpeg_cv2: q}: OpenCV's
      blur1: [{blur: 1.0}]                # PIL's Gaussian blur; {gaussian: s}: scipy's, per channel
      resize0.5: [{resize: 0.5}]          # downscale, then upscale back to the input size
      combo: [{blur: 1.0}, {resize: 0.5}, {jpeg: 75}]
      blur-rand: [{blur: {sigma: [0.0, 3.0], p: 0.5}}]   # randomised, drawn per image (seeded)

``none`` is the identity. Operations are deterministic (PIL), so scores reproduce.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

OPS = ("jpeg", "jpeg_cv2", "blur", "gaussian", "resize", "jitter")


RANDOMISED = {"blur": "sigma", "jitter": "strength"}  # ops that take {<param>: v | [a, b], p: prob}


def check_chain(chain: Sequence[dict]) -> None:
    for step in chain:
        if len(step) != 1 or next(iter(step)) not in OPS:
            raise ValueError(
                f"perturbation step {step!r}: one of {OPS} with its parameter expected"
            )
        ((op, value),) = step.items()
        if isinstance(value, dict):
            if (
                op not in RANDOMISED
                or RANDOMISED[op] not in value
                or set(value) - {RANDOMISED[op], "p"}
            ):
                raise ValueError(f"perturbation step {step!r}: a randomised step is "
                                 f"{{{op}: {{{RANDOMISED.get(op, '?')}: v or [a, b], p: prob}}}}")  # fmt: skip
            if not 0 <= float(value.get("p", 1.0)) <= 1:
                raise ValueError(f"perturbation step {step!r}: p outside [0, 1]")
            param = value[RANDOMISED[op]]
            for v in param if isinstance(param, (list, tuple)) else [param]:
                check_chain([{op: max(float(v), 1e-9)}])
            continue
        if op in ("jpeg", "jpeg_cv2") and not 1 <= int(value) <= 100:
            raise ValueError(f"jpeg quality {value} outside 1..100")
        if op in ("blur", "gaussian") and not 0 < float(value) <= 50:
            raise ValueError(f"blur sigma {value} outside (0, 50]")
        if op == "resize" and not 0 < float(value) < 1:
            raise ValueError(f"resize factor {value} outside (0, 1)")
        if op == "jitter" and not 0 < float(value) <= 1:
            raise ValueError(f"colour jitter strength {value} outside (0, 1]")


def apply_chain(arr: np.ndarray, chain: Sequence[dict]) -> np.ndarray:
    """Apply ``chain`` to an H x W x 3 uint8 image; returns the same shape and dtype."""
    img = Image.fromarray(arr)
    size = img.size
    for i, step in enumerate(chain):
        ((op, value),) = step.items()
        if isinstance(value, dict):  # randomised: drawn from the image itself, so reproducible
            value = _draw(arr, i, value, RANDOMISED[op])
            if value is None:
                continue
        if op == "jpeg":
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=int(value))
            img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        elif op == "jpeg_cv2":  # OpenCV's encoder (other tables and rounding than PIL's)
            import cv2

            ok, enc = cv2.imencode(
                ".jpg", np.asarray(img)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(value)]
            )
            if not ok:
                raise ValueError(f"OpenCV could not encode a JPEG at quality {value}")
            img = Image.fromarray(cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1])
        elif op == "blur":
            img = img.filter(ImageFilter.GaussianBlur(radius=float(value)))
        elif op == "gaussian":  # scipy's Gaussian filter per channel, sigma in pixels (RINE's blur)
            from scipy.ndimage import gaussian_filter

            a = np.asarray(img).astype(np.float64)
            out = np.stack(
                [gaussian_filter(a[..., c], sigma=float(value)) for c in range(3)], axis=-1
            )
            img = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
        elif op == "jitter":  # brightness, contrast, saturation in [1-v, 1+v], seeded by the image
            rng = np.random.default_rng(zlib.crc32(np.asarray(img).tobytes()))
            for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                img = enhance(img).enhance(float(rng.uniform(1 - float(value), 1 + float(value))))
        elif op == "resize":
            small = (max(1, round(size[0] * float(value))), max(1, round(size[1] * float(value))))
            img = img.resize(small, Image.Resampling.BICUBIC).resize(size, Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def _draw(arr: np.ndarray, index: int, spec: dict, param: str) -> float | None:
    """One randomised step's value for this image, or None when its coin (``p``) says skip:
    seeded by the image's pixels and the step's place in the chain (same image, same draw)."""
    rng = np.random.default_rng([zlib.crc32(np.ascontiguousarray(arr).tobytes()), index, 17])
    if rng.random() >= float(spec.get("p", 1.0)):
        return None
    v = spec[param]
    value = float(rng.uniform(v[0], v[1])) if isinstance(v, (list, tuple)) else float(v)
    return value if value > 0 else None


def perturbed_arrays(jpegs: Sequence[bytes], chain: Sequence[dict]) -> np.ndarray:
    """Decode processed JPEGs and perturb them: N x H x W x 3 uint8."""
    from sidflow.data.images import decode_jpeg_array

    check_chain(chain)
    return (
        np.stack([apply_chain(decode_jpeg_array(j), chain) for j in jpegs])
        if len(jpegs)
        else np.zeros((0, 1, 1, 3), np.uint8)
    )
