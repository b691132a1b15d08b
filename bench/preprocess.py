"""Benchmark: sidflow's preprocess step vs a naive PIL loop on large JPEGs.

    python bench/preprocess.py --n 200 --size 1024 --image-size 256 --threads 2

Generates ``n`` photo-like JPEGs of ``size`` x ``size`` in a temporary folder, then
times, in one run:

* naive: ``PIL.Image.open -> convert("RGB") -> resize -> save JPEG`` per file, one process;
* draft decode only: ``Image.draft`` + ``load`` per file, one process (the floor per core);
* sidflow: ``preprocess_generator`` (JPEG draft-mode decoding, sharded Parquet output,
  quarantine bookkeeping) with 1 worker and with ``--threads`` workers.

Prints images/s, MB/s of source bytes and the speed-up over naive as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from sidflow.data.preprocess import PreprocessParams, preprocess_generator


def make_jpegs(folder: Path, n: int, size: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(n):
        small = rng.integers(0, 256, (size // 32, size // 32, 3), dtype=np.uint8)
        img = (
            Image.fromarray(small)
            .resize((size, size), Image.Resampling.BICUBIC)
            .filter(ImageFilter.DETAIL)
        )
        noise = rng.integers(-12, 13, (size, size, 3))
        arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(arr).save(path, quality=92)
        total += path.stat().st_size
    return total


def naive(folder: Path, image_size: int, quality: int) -> None:
    for path in sorted(folder.iterdir()):
        with Image.open(path) as img:
            out = img.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
            out.save(io.BytesIO(), format="JPEG", quality=quality)


def draft_decode(folder: Path, image_size: int) -> None:
    """The floor: JPEG draft-mode decoding alone (no resize, encode, hashing or output)."""
    for path in sorted(folder.iterdir()):
        with Image.open(path) as img:
            img.draft("RGB", (image_size, image_size))
            img.load()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        source_bytes = make_jpegs(raw, args.n, args.size)
        mb = source_bytes / 1e6
        results = {
            "n": args.n,
            "source_size": args.size,
            "image_size": args.image_size,
            "source_mb": round(mb, 1),
        }
        t = time.perf_counter()
        naive(raw, args.image_size, args.quality)
        naive_s = time.perf_counter() - t
        results["naive"] = {
            "seconds": round(naive_s, 2),
            "images_per_s": round(args.n / naive_s, 1),
            "mb_per_s": round(mb / naive_s, 1),
        }
        t = time.perf_counter()
        draft_decode(raw, args.image_size)
        draft_s = time.perf_counter() - t
        results["draft_decode_only"] = {
            "seconds": round(draft_s, 2),
            "images_per_s": round(args.n / draft_s, 1),
        }
        params = PreprocessParams(
            image_size=args.image_size, jpeg_quality=args.quality, shard_size=1000
        )
        for threads in sorted({1, args.threads}):
            out = Path(tmp) / f"out{threads}"
            t = time.perf_counter()
            summary = preprocess_generator(raw, out, params, threads=threads)
            s = time.perf_counter() - t
            assert summary["written"] == args.n, summary
            results[f"sidflow_{threads}w"] = {"seconds": round(s, 2), "images_per_s": round(args.n / s, 1),
                                              "mb_per_s": round(mb / s, 1), "speedup_vs_naive": round(naive_s / s, 2),
                                              # per worker, how much slower than decoding alone
                                              "per_core_vs_draft_decode": round(s * threads / draft_s, 2)}  # fmt: skip
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
