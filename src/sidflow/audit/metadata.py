"""Shortcut audit, part 1: what the raw files say about themselves, before preprocessing.

One row per raw file (keyed, like every table, by ``image_id`` = sha256 of its bytes):
container format, pixel mode, width, height, file size, bytes per pixel, JPEG quality
estimated from the luminance quantisation table, the mean luma/chroma quantiser,
chroma subsampling, progressive coding, EXIF/ICC presence. Only headers are parsed (no
pixel decode), so it costs a read and a hash per file. Unreadable files get a row with
``format = "unreadable"``; the preprocess step is where they are quarantined and counted.

Run: ``rule metadata`` (``workflow/rules/audit.smk``) or
``python -c "from sidflow.audit.metadata import raw_metadata; print(raw_metadata('data/raw/demo/real'))"``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from sidflow.data.images import read_image_file
from sidflow.data.preprocess import list_inputs
from sidflow.io import sha256_bytes, text_path, write_parquet

log = logging.getLogger(__name__)

# ITU-T T.81 Annex K.1 luminance table (natural order), the base of the IJG quality scale.
_STD_LUMA = np.array(
    [
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
        14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
    ],
    dtype=np.float64,
)  # fmt: skip

NUMERIC_FEATURES = (
    "width", "height", "file_bytes", "bytes_per_pixel", "jpeg_quality",
    "quant_luma_mean", "quant_chroma_mean", "subsampling", "progressive", "has_exif", "has_icc",
)  # fmt: skip
CATEGORICAL_FEATURES = ("format", "mode")
METADATA_COLUMNS = ("image_id", "source_path", *CATEGORICAL_FEATURES, *NUMERIC_FEATURES)


def ijg_table(quality: int) -> np.ndarray:
    """The IJG (libjpeg) luminance table for ``quality`` in 1..100, baseline-clipped."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality  # integer, as libjpeg
    return np.clip(np.floor((_STD_LUMA * scale + 50) / 100), 1, 255)


_IJG = np.stack([ijg_table(q) for q in range(1, 101)])


def estimate_jpeg_quality(luma_table) -> float:
    """IJG quality (1..100) whose luminance table is closest to ``luma_table``.

    Tables written by other encoders land on the nearest IJG quality; the mean
    quantiser is recorded beside it so that non-IJG tables still separate.
    Decoders list the 64 entries in natural or zigzag order, so the distance is also
    taken between the sorted tables (order-free) and the smaller one counts.
    """
    t = np.asarray(list(luma_table), dtype=np.float64)
    if t.shape != (64,):
        raise ValueError(f"a luminance table has 64 entries, got {t.shape}")
    dist = np.abs(_IJG - t).sum(axis=1)
    dist_sorted = np.abs(np.sort(_IJG, axis=1) - np.sort(t)).sum(axis=1)
    return float(np.argmin(np.minimum(dist, dist_sorted)) + 1)


def file_metadata(data: bytes) -> dict:
    """Header facts of one file; raises on a file PIL cannot identify."""
    img = Image.open(io.BytesIO(data))
    row = {
        "format": img.format or "unknown",
        "mode": img.mode,
        "width": float(img.width),
        "height": float(img.height),
        "file_bytes": float(len(data)),
        "bytes_per_pixel": len(data) / max(1, img.width * img.height),
        "jpeg_quality": np.nan,
        "quant_luma_mean": np.nan,
        "quant_chroma_mean": np.nan,
        "subsampling": np.nan,
        "progressive": float(bool(img.info.get("progressive") or img.info.get("progression"))),
        "has_exif": float(bool(img.info.get("exif"))),
        "has_icc": float(bool(img.info.get("icc_profile"))),
    }
    quant = getattr(img, "quantization", None)
    if img.format == "JPEG" and quant:
        tables = [np.asarray(list(quant[k]), dtype=np.float64) for k in sorted(quant)]
        row["jpeg_quality"] = estimate_jpeg_quality(tables[0])
        row["quant_luma_mean"] = float(tables[0].mean())
        if len(tables) > 1:
            row["quant_chroma_mean"] = float(tables[1].mean())
        try:
            from PIL import JpegImagePlugin

            row["subsampling"] = float(JpegImagePlugin.get_sampling(img))
        except Exception:  # noqa: BLE001 - an odd sampling layout is not an error here
            pass
    return row


def raw_metadata(raw_dir: str | Path) -> pd.DataFrame:
    """One row per file below ``raw_dir`` (same listing as the preprocess step)."""
    raw_dir = Path(raw_dir)
    rows = []
    for rel in list_inputs(raw_dir):
        path = raw_dir / rel
        row = {"source_path": text_path(rel), "image_id": None}
        try:
            if path.is_symlink():
                raise OSError("symbolic link")
            data = read_image_file(
                path
            )  # special or huge files: not read (quarantined by preprocess)
            row["image_id"] = sha256_bytes(data)
            row.update(file_metadata(data))
        except Exception as exc:  # noqa: BLE001 - recorded, quarantined later by preprocess
            log.info("%s: no metadata (%s: %s)", path, type(exc).__name__, exc)
            row.update(format="unreadable", mode="unknown")
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(METADATA_COLUMNS))
    for col in NUMERIC_FEATURES:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


def write_raw_metadata(raw_dir: str | Path, out_path: str | Path) -> pd.DataFrame:
    """Snakemake entry point: write ``raw_metadata`` atomically and log format counts."""
    df = raw_metadata(raw_dir)
    write_parquet(out_path, df)
    log.info("%s: %d files, formats %s", raw_dir, len(df), df["format"].value_counts().to_dict())
    return df
