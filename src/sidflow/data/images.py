"""Decode any input image into a clean RGB picture, or say exactly why not.

``normalize_image`` is the single place where real and fake images get the same
treatment: decode (JPEG draft mode when downscaling), EXIF transpose, RGB,
resize + centre crop to ``image_size``, then encode (:data:`ENCODE_MODES`): re-encode as
JPEG at ``jpeg_quality`` (the default: every image carries the same compression, so the
file format cannot be a shortcut), ``png`` (lossless after the resize), or ``original``
(the source bytes untouched where nothing had to change, else lossless PNG).
``sidflow predict`` calls the same function, so inference sees exactly the
training preprocessing.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_BYTES = 512 * 2**20  # larger inputs are refused before a byte is read


class BadImageError(ValueError):
    """The input cannot be turned into a picture; ``reason`` says why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Normalized:
    jpeg: bytes  # the processed image's bytes (JPEG unless another encode mode is chosen)
    width: int
    height: int
    source_format: str
    source_mode: str
    source_width: int
    source_height: int
    conversion: str
    encoding: str = "jpeg"  # jpeg | png | original-<source format>


ENCODE_MODES = ("jpeg", "png", "original")


def _to_rgb(img: Image.Image) -> tuple[Image.Image, list[str]]:
    """Convert any still-image mode to 8-bit RGB; list what was done."""
    notes: list[str] = []
    mode = img.mode
    if mode == "RGB":
        return img, notes
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():  # NaN/inf pixels have no value to show: never guess one
            raise BadImageError(
                "non-finite pixels", f"{int(bad.sum())} of {arr.size} pixels are NaN or infinite"
            )
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        notes.append(f"{mode}->8bit")
        return Image.fromarray(arr).convert("RGB"), notes
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
        notes.append("palette->RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
        if alpha.min() < 255:
            notes.append("alpha composited on white")
        else:
            notes.append("opaque alpha dropped")
        return img, notes
    if mode == "CMYK":
        notes.append("CMYK->RGB")
        return img.convert("RGB"), notes
    if mode in ("L", "1", "YCbCr", "LAB", "HSV"):
        notes.append(f"{mode}->RGB")
        return img.convert("RGB"), notes
    raise BadImageError("unsupported pixel mode", mode)


def open_image(data: bytes, draft_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Decode ``data`` fully; return (RGB image, source info dict, conversions).

    Raises :class:`BadImageError` for empty, non-image, truncated, animated,
    oversized (decompression bomb) or otherwise unreadable input.
    """
    if len(data) == 0:
        raise BadImageError("empty file", "0 bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise BadImageError(
                "not an image", "no decoder recognises the file signature"
            ) from None
        except Image.DecompressionBombError as exc:
            raise BadImageError("decompression bomb", str(exc)) from None
        except Image.DecompressionBombWarning as exc:
            raise BadImageError("decompression bomb", str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input
            raise BadImageError("unreadable image", f"{type(exc).__name__}: {exc}") from None
        info = {
            "source_format": img.format or "unknown",
            "source_mode": img.mode,
            "source_width": img.width,
            "source_height": img.height,
        }
        if img.width * img.height > max_pixels:
            raise BadImageError(
                "decompression bomb", f"{img.width}x{img.height} exceeds {max_pixels} pixels"
            )
        if getattr(img, "n_frames", 1) > 1:
            raise BadImageError(
                "animated image", f"{img.n_frames} frames; which frame is ambiguous"
            )
        try:
            if draft_size and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            img = ImageOps.exif_transpose(img)
        except Image.DecompressionBombWarning as exc:
            raise BadImageError("decompression bomb", str(exc)) from None
        except OSError as exc:
            raise BadImageError("truncated or corrupt image data", str(exc)) from None
        except Exception as exc:  # noqa: BLE001
            raise BadImageError("unreadable image", f"{type(exc).__name__}: {exc}") from None
    img, notes = _to_rgb(img)
    return img, info, notes


def read_image_file(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of an input file, after checking (without reading) that it is a regular file
    (a FIFO, device or socket would block or never end) of at most ``max_bytes``.
    Raises :class:`BadImageError` naming the reason; ``OSError`` if it cannot be read."""
    import os
    import stat

    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise BadImageError(
            "special file", f"not a regular file (mode {stat.filemode(st.st_mode)}); not read"
        )
    if st.st_size > max_bytes:
        raise BadImageError(
            "file too large", f"{st.st_size} bytes > max_bytes {max_bytes}; not read"
        )
    return Path(path).read_bytes()


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to ``size`` (bicubic, antialiased) and centre-crop a square."""
    if img.size == (size, size):
        return img
    return ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(
        buf,
        format="JPEG",
        quality=int(quality),
        subsampling=0 if quality >= 90 else 2,
        optimize=False,
    )
    return buf.getvalue()


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def normalize_image(
    data: bytes,
    image_size: int,
    jpeg_quality: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    encode: str = "jpeg",
) -> Normalized:
    """The preprocessing every image gets, in training and in ``sidflow predict``."""
    if encode not in ENCODE_MODES:
        raise ValueError(f"encode must be one of {ENCODE_MODES}, got {encode!r}")
    draft = image_size if encode == "jpeg" else None  # draft decoding is lossy: JPEG mode only
    img, info, notes = open_image(data, draft_size=draft, max_pixels=max_pixels)
    out = resize_center_crop(img, image_size)
    if encode == "jpeg":
        body, encoding = encode_jpeg(out, jpeg_quality), "jpeg"
    elif encode == "original" and out is img and not notes and not _transposed(data):
        body, encoding = (
            data,
            f"original-{info['source_format']}",
        )  # nothing changed: keep the bytes
    else:
        body, encoding = encode_png(out), "png"
    return Normalized(
        jpeg=body,
        width=out.width,
        height=out.height,
        conversion=";".join(notes),
        encoding=encoding,
        **info,
    )


def _transposed(data: bytes) -> bool:
    """Whether the file's EXIF orientation rotates or flips it (its pixels then differ)."""
    with Image.open(io.BytesIO(data)) as img:
        return img.getexif().get(0x0112, 1) != 1


def decode_jpeg_array(jpeg: bytes) -> np.ndarray:
    """Decode a processed image (JPEG, or PNG / original bytes in those encode modes) to an
    HxWx3 uint8 array."""
    with Image.open(io.BytesIO(jpeg)) as img:
        return np.asarray(img.convert("RGB"))
