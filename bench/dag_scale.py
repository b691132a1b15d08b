"""Benchmark: does the DAG scale with generators/shards, not images? (GenImage is ~2.5M images)

    python bench/dag_scale.py --sizes 10000 100000 1000000 2500000 --generators 8

For each size N it builds, in a temporary folder, a synthetic dataset "scale" of ``--generators``
subsets (one real) holding N images in all: raw files (a few bytes each, unique content), their
content indexes, and processed Parquet shards (``--shard-size`` rows each) dated as done by
``snakemake --touch``. Then it measures, each in a child process (peak RSS from ``wait4``):

* ``snakemake -n`` of the whole pipeline with each raw-folder check (warm stat cache: the usual
  rerun): ``watch_raw: files`` (every file stat'ed), the default ``auto`` (per file below
  200,000 files per folder, folder mtimes above) and ``false`` (none); the planned job count
  must not depend on N;
* the label step (``label_generator``) on one generator holding all N images.

Prints one JSON record per size and writes them to results/bench/dag_scale.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sidflow.data.raw_index import write_index

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB, output) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, out


def planned_jobs(out: str) -> int:
    for line in out.split("Job stats:")[-1].splitlines():
        if line.startswith("total"):
            return int(line.split()[1])
    return 0


def write_shards(dest: Path, n: int, start: int, shard_size: int) -> None:
    """Processed shards with the columns the label step reads (synthetic ids)."""
    dest.mkdir(parents=True, exist_ok=True)
    for k, lo in enumerate(range(0, n, shard_size)):
        idx = range(start + lo, start + min(lo + shard_size, n))
        ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in idx]
        table = pa.table({"image_id": ids, "source_path": [f"img_{i:08d}.png" for i in idx],
                          "pixel_sha256": ids, "jpeg": pa.array([b"x"] * len(ids), pa.binary())})  # fmt: skip
        pq.write_table(table, dest / f"part-{k:05d}.parquet")
    (dest / "summary.json").write_text(json.dumps({"written": n}))


def write_raw(dest: Path, n: int, start: int) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (dest / f"img_{i:08d}.png").write_bytes(i.to_bytes(8, "little"))


def build(work: Path, n: int, n_gen: int, shard_size: int, raw_files: bool) -> list[str]:
    for name in ("Snakefile", "config.yaml", "workflow", "config", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    gens = ["real", *[f"fake{i}" for i in range(1, n_gen)]]
    with open(work / "config/generators.tsv", "a") as f:
        for g in gens:
            label = "real" if g == "real" else "fake"
            f.write(f"scale\t{g}\t{label}\tsynthetic\tnone\t\tbench/dag_scale.py\n")
    overlay = {
        "use_datasets": ["scale"],
        "datasets": {"scale": {"source": {"type": "local", "path": "data/downloads/scale"}}},
        "experiment": {"name": "scale", "train_generators": ["scale/real", "scale/fake1"],
                       "perturbations": ["jpeg75", "combo"]},
    }  # fmt: skip
    (work / "scale.yaml").write_text(yaml.safe_dump(overlay))
    per = n // n_gen
    for k, g in enumerate(gens):
        raw = work / f"data/raw/scale/{g}"
        if raw_files:
            write_raw(raw, per, k * per)
        else:
            raw.mkdir(parents=True)
        write_index(raw, work / f"data/raw-index/scale/{g}.tsv",
                    work / f".snakemake/sidflow-raw-stat/scale/{g}.parquet")  # fmt: skip
        write_shards(work / f"data/processed/scale/{g}", per, k * per, shard_size)
    targets = [f"data/processed/scale/{g}" for g in gens]
    smk = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "scale.yaml"]
    timed([sys.executable, "-m", "snakemake", *targets, "--cores", "1", "--configfile", "scale.yaml",
           "--touch", "--allowed-rules", "download", "preprocess"], work)  # fmt: skip
    return smk


def label_child(processed: Path, out: Path) -> list[str]:
    code = ("from sidflow.data.manifest import label_generator as f; import sys; "
            "f(sys.argv[1], sys.argv[2] + '/m.parquet', sys.argv[2] + '/d.parquet', 'scale', 'all', 'fake', "
            "{'train': 0.7, 'val': 0.1, 'test': 0.2})")  # fmt: skip
    return [sys.executable, "-c", code, str(processed), str(out)]


def one_size(n: int, args) -> dict:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        work = Path(tmp) / "wf"
        work.mkdir()
        t0 = time.perf_counter()
        smk = build(work, n, args.generators, args.shard_size, n <= args.raw_files_max)
        setup_s = time.perf_counter() - t0
        rec = {"images": n, "generators": args.generators, "shards": -(-n // args.generators // args.shard_size) * args.generators,
               "raw_files": n <= args.raw_files_max, "setup_s": round(setup_s, 1)}  # fmt: skip
        # files first: its full scan also records the folder mtimes the default (auto) checks
        for watch, key in (
            ("files", "dryrun_files"),
            ("auto", "dryrun_default"),
            ("false", "dryrun_nowatch"),
        ):
            (work / "watch.yaml").write_text(f"watch_raw: {watch}\n")
            s, mb, out = timed([*smk, "watch.yaml", "-n"], work)
            rec.update(
                {
                    f"{key}_s": round(s, 2),
                    f"{key}_peak_mib": round(mb),
                    f"{key}_jobs": planned_jobs(out),
                }
            )
        label_in = Path(tmp) / "label"
        write_shards(label_in / "processed", n, 0, args.shard_size)
        s, mb, _ = timed(label_child(label_in / "processed", label_in), work)
        rec.update({"label_s": round(s, 2), "label_peak_mib": round(mb),
                    "label_rows": len(pd.read_parquet(label_in / "m.parquet", columns=["split"]))})  # fmt: skip
    print(json.dumps(rec), flush=True)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 2_500_000])
    p.add_argument("--generators", type=int, default=8)
    p.add_argument("--shard-size", type=int, default=5000)
    p.add_argument(
        "--raw-files-max", type=int, default=10**9, help="above this N, raw folders stay empty"
    )
    p.add_argument("--tmp", default=None, help="scratch folder (default: the system's)")
    p.add_argument("--out", default="results/bench/dag_scale.json")
    args = p.parse_args()
    records = [one_size(n, args) for n in args.sizes]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
