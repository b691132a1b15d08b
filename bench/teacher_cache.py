"""Benchmark: teacher cache throughput per teacher, and reading a 1M-row cache back.

    python bench/teacher_cache.py --images 512 --rows 1000000 --dim 768

1. For each registered teacher (tiny configs of the same classes as the real ones, or
   ``--checkpoint name=path`` for a real one), score ``--images`` images of
   ``--image-size`` px through ``build_teacher_cache`` on the CPU (or ``--device``) and
   report images/s.
2. Write a synthetic cache of ``--rows`` rows with ``--dim``-float embeddings (the
   real schema) and time reading it back: seconds, MB/s of Parquet, rows/s.

Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def make_dataset(root: Path, n: int, size: int) -> tuple[Path, Path]:
    from PIL import Image

    from sidflow.data.manifest import label_generator
    from sidflow.data.preprocess import PreprocessParams, preprocess_generator

    raw = root / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            raw / f"{i:06d}.png"
        )
    proc, man = root / "proc", root / "man.parquet"
    preprocess_generator(raw, proc, PreprocessParams(image_size=size), threads=2)
    label_generator(
        proc,
        man,
        root / "dup.parquet",
        "bench",
        "g",
        "real",
        {"train": 0.8, "val": 0.1, "test": 0.1},
    )
    return proc, man


def bench_teacher(
    name: str, checkpoint: str, root: Path, proc: Path, man: Path, size: int, device: str
) -> dict:
    from sidflow.cache.teacher_cache import build_teacher_cache
    from sidflow.io import hash_tree, write_json
    from sidflow.models.teachers import TeacherConfig, create_teacher

    cfg = TeacherConfig(arch=name, checkpoint=checkpoint, image_size=size)
    teacher = create_teacher(name, cfg)
    tdir = root / f"teacher-{name}"
    teacher.save(tdir)
    write_json(tdir / "card.json", {"teacher": name, "checkpoint_hash": hash_tree(tdir / "model")})
    params = sum(p.numel() for p in teacher.model.parameters())
    t = time.perf_counter()
    s = build_teacher_cache(
        tdir,
        man,
        proc,
        root / f"cache-{name}.parquet",
        "{}",
        cache_root=root / "cache",
        device=device,
    )
    sec = time.perf_counter() - t
    return {"checkpoint": checkpoint, "parameters": params, "rows": s["rows"], "seconds": round(sec, 2),
            "images_per_s": round(s["rows"] / sec, 1)}  # fmt: skip


def bench_read(root: Path, rows: int, dim: int) -> dict:
    from sidflow.cache.teacher_cache import cache_schema

    path = root / "big.parquet"
    rng = np.random.default_rng(0)
    writer = pq.ParquetWriter(path, cache_schema(dim), compression="zstd")
    step = 100_000
    for lo in range(0, rows, step):
        n = min(step, rows - lo)
        emb = rng.standard_normal((n, dim), dtype=np.float32)
        logits = rng.standard_normal((n, 2)).astype(np.float32)
        table = pa.table(
            {
                "image_id": [f"{i:064x}" for i in range(lo, lo + n)],
                "logit_real": logits[:, 0], "logit_fake": logits[:, 1],
                "p_fake": rng.random(n).astype(np.float32),
                "caption": np.where(rng.random(n) < 0.5, "real", "fake"),
                "caption_class": np.where(rng.random(n) < 0.5, "real", "fake"),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim),
                "teacher": ["bench"] * n, "teacher_hash": ["0" * 64] * n, "preprocess": ["{}"] * n,
                "code_version": ["bench"] * n,
            },
            schema=cache_schema(dim),
        )  # fmt: skip
        writer.write_table(table)
    writer.close()
    out = {"rows": rows, "dim": dim, "file_mb": round(path.stat().st_size / 1e6, 1)}
    meta = pq.ParquetFile(path).metadata
    for label, cols in (
        ("all_columns", None),
        ("logits_only", ["image_id", "logit_real", "logit_fake"]),
    ):
        names = set(cols or cache_schema(dim).names)
        mb = 0.0  # Parquet bytes that the selected columns occupy
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                col = meta.row_group(g).column(c)
                if col.path_in_schema.split(".")[0] in names:
                    mb += col.total_compressed_size / 1e6
        t = time.perf_counter()
        df = pd.read_parquet(path, columns=cols)
        sec = time.perf_counter() - t
        assert len(df) == rows
        out[label] = {"seconds": round(sec, 2), "rows_per_s": round(rows / sec), "mb_read": round(mb, 1),
                      "mb_per_s": round(mb / sec, 1)}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument(
        "--dim", type=int, default=768, help="embedding size (ViT-GPT2: 768; BLIP-2 OPT-2.7b: 2560)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--checkpoint", action="append", default=[], help="name=path of a real checkpoint"
    )
    args = ap.parse_args()
    checkpoints = {"vitgpt2": "tiny", "blip2": "tiny"} | dict(
        c.split("=", 1) for c in args.checkpoint
    )
    results: dict = {"device": args.device, "images": args.images, "image_size": args.image_size}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc, man = make_dataset(root, args.images, args.image_size)
        results["teachers"] = {
            n: bench_teacher(n, c, root, proc, man, args.image_size, args.device)
            for n, c in checkpoints.items()
        }
        results["read_cache"] = bench_read(root, args.rows, args.dim)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
