"""Shared fixtures: tiny generated images of every kind, repo paths, the shared data."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CIFAKE_ZIP = SHARED / "datasets" / "cifake" / "cifake-train-90k.zip"


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


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def cifake_zip() -> Path:
    if not CIFAKE_ZIP.exists():
        pytest.skip("../shared/datasets/cifake is absent (outside this workplace)")
    return CIFAKE_ZIP


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


@pytest.fixture
def tiny_dataset(tmp_path):
    """Two generators (real, fake) preprocessed and labelled: {'manifests': [...], 'processed': [...]}."""
    from sidflow.data.manifest import label_generator
    from sidflow.data.preprocess import PreprocessParams, preprocess_generator

    out = {"manifests": [], "processed": [], "root": tmp_path}
    for gen, fake in (("real", False), ("fake", True)):
        separable_images(tmp_path / "raw" / gen, 60, fake, seed=int(fake))
        proc = tmp_path / "processed" / gen
        preprocess_generator(
            tmp_path / "raw" / gen, proc, PreprocessParams(image_size=32, jpeg_quality=95)
        )
        man = tmp_path / "manifests" / f"{gen}.parquet"
        label_generator(proc, man, tmp_path / "manifests" / f"{gen}.dup.parquet", "toy", gen,
                        "fake" if fake else "real", {"train": 0.6, "val": 0.2, "test": 0.2})  # fmt: skip
        out["manifests"].append(str(man))
        out["processed"].append(str(proc))
    return out


# -- the workflow end to end on a shrunken demo (shared by the workflow, SLURM and rerun tests)
SMALL = """
datasets:
  demo:
    source: {type: builtin-demo, n_real: 120, n_fake: 60, raw_size: 32, ae_steps: 20, inject_bad_files: true}
teachers:
  vitgpt2:
    arch: vitgpt2
    tiny: {hidden_size: 32, layers: 1, heads: 2, patch_size: 8}
    finetune: {epochs: 1, batch_size: 32}
  blip2:
    arch: blip2
    tiny: {hidden_size: 32, layers: 1, heads: 2, patch_size: 8, query_tokens: 4}
    finetune: {epochs: 1, batch_size: 32}
experiment:
  name: smoke
  train_generators: [demo/real, demo/ae-deconv, demo/dcgan-face]
  teachers: [vitgpt2, blip2]
  perturbations: [jpeg75, combo]
  students:
    student-kd: {alpha: 1.0, beta: 0.5, epochs: 1}
    student-nokd: {alpha: 0.0, epochs: 1}
probe:
  backbones:
    effnet-lite0: {arch: efficientnet-lite0, resize: 40, image_size: 32}
  grid: {backbones: [effnet-lite0, effnet-vitgpt2], reductions: [none], classifiers: [logreg],
         transforms: [none, blur]}
"""
WORKFLOW_FILES = ("Snakefile", "config.yaml", "workflow", "config", "profiles")


def copy_workflow(dest: Path) -> Path:
    """The workflow's files (not data or results) copied into ``dest``, plus small.yaml."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    (dest / "small.yaml").write_text(SMALL)
    return dest


def run_snakemake(cwd, *args, timeout: int = 1500):
    """``python -m snakemake --cores 2 ARGS`` in ``cwd`` (stdout and stderr captured)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def planned_jobs(out: str) -> dict[str, int]:
    """Job counts per rule from a dry run's "Job stats" table ({} when nothing to do)."""
    if "Job stats:" not in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    rows = [line.split() for line in table.splitlines()[3:] if line.strip()]
    return {r[0]: int(r[1]) for r in rows}


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """The shrunken demo run once, locally (``--cores 2``), for every test that needs it."""
    work = copy_workflow(tmp_path_factory.mktemp("wf"))
    r = run_snakemake(work, "--configfile", "small.yaml")
    assert r.returncode == 0, r.stderr[-4000:]
    return work
