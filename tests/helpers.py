"""Helpers the tests share (imported as ``from helpers import ...``; fixtures live in conftest).

Image makers for every kind of good and bad input, the workflow copier and Snakemake runner
used by the workflow-tier tests, and the overlays under ``tests/configs/``.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CIFAKE_ZIP = SHARED / "datasets" / "cifake" / "cifake-train-90k.zip"
AIGEN_ZIP = SHARED / "datasets" / "aigen-vqa" / "aigen-vqa.zip"
# the AIGen-VQA generators as their metadata names them (canonical spelling)
AIGEN_GENERATORS = (
    "natural",
    "adm",
    "biggan",
    "glide",
    "midjourney",
    "sd1.4",
    "sd1.5",
    "vqdm",
    "wukong",
)
CONFIGS = Path(__file__).resolve().parent / "configs"
WORKFLOW_FILES = ("Snakefile", "config.yaml", "workflow", "config", "profiles")


def config_text(name: str) -> str:
    """The text of ``tests/configs/<name>.yaml``."""
    return (CONFIGS / f"{name}.yaml").read_text()


def rgb_array(seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.kron(base, np.ones((8, 8, 1), dtype=np.uint8)) + rng.integers(
        0, 8, (size, size, 3), dtype=np.uint8
    )


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(arr)
    if mode:
        img = img.convert(mode)
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray, quality: int = 95, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality, **kw)
    return buf.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG whose header claims a huge size (decoding it would need GBs)."""
    data = png_bytes(np.zeros((1, 1, 3), dtype=np.uint8))
    ihdr = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + ihdr
    return (
        data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]
    )


def write_images(
    folder: Path, n: int, seed: int = 0, fmt: str = "png", size: int = 48
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = rgb_array(seed * 100_000 + i, size)
        p = folder / f"img_{seed}_{i:04d}.{fmt}"
        p.write_bytes(png_bytes(arr) if fmt == "png" else jpeg_bytes(arr))
        paths.append(p)
    return paths


def separable_images(folder: Path, n: int, fake: bool, seed: int) -> None:
    """Real: smooth blocks; fake: the same plus a high-frequency checkerboard (easy to learn)."""
    folder.mkdir(parents=True, exist_ok=True)
    checker = (np.indices((32, 32)).sum(0) % 2 * 60).astype(np.int16)[..., None]
    for i in range(n):
        arr = rgb_array(seed * 1000 + i, 32).astype(np.int16)
        if fake:
            arr = arr + checker
        (folder / f"{'f' if fake else 'r'}_{i:04d}.png").write_bytes(
            png_bytes(np.clip(arr, 0, 255).astype(np.uint8))
        )


def copy_workflow(dest: Path, experiments: bool = False) -> Path:
    """The workflow's files (not data or results) copied into ``dest``, plus small.yaml;
    ``experiments``: the ``experiments/`` overlays too."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES + (("experiments",) if experiments else ()):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    shutil.copy(CONFIGS / "small.yaml", dest / "small.yaml")
    if AIGEN_ZIP.exists():  # small.yaml's explainer.vqa.archive (absent: the VQA step is skipped)
        (dest / "aigen-vqa.zip").symlink_to(AIGEN_ZIP)
    return dest


def run_snakemake(cwd, *args, timeout: int = 1500, launcher: Path | None = None):
    """``python -m snakemake --cores 2 ARGS`` in ``cwd`` (stdout and stderr captured);
    ``launcher``: a script run instead of ``-m snakemake`` (same arguments)."""
    start = [str(launcher)] if launcher else ["-m", "snakemake"]
    cmd = [sys.executable, *start, "--cores", "2", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def planned_jobs(out: str) -> dict[str, int]:
    """Job counts per rule from a dry run's "Job stats" table ({} when nothing to do)."""
    if "Job stats:" not in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    rows = [line.split() for line in table.splitlines()[3:] if line.strip()]
    return {r[0]: int(r[1]) for r in rows}
