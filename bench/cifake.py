"""CIFAKE end to end: wall time per stage, peak memory and the final metrics, as JSON.

    python bench/cifake.py                          # main run (experiments/cifake.yaml)
    python bench/cifake.py --ablations              # + experiments/cifake-ablations.yaml
    python bench/cifake.py --fresh                  # delete CIFAKE data and its own results first

Runs ``snakemake --profile profiles/local`` with the overlays, then reads the per-job
``benchmark:`` files every rule writes under ``logs/benchmarks/`` (wall seconds and
max RSS per job) and ``results/cifake/metrics/metrics.parquet``. Writes
``results/bench/cifake[-ablations].json``; compare runs by diffing those files.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from sidflow.gc import own_stores

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("download", "preprocess", "label", "teacher_finetune", "teacher_cache", "student_distill",
          "score", "evaluate", "report")  # fmt: skip


def stage_of(path: Path) -> str:
    parts = path.relative_to(ROOT / "logs" / "benchmarks").parts
    for p in parts:
        if p in STAGES:
            return p
    return parts[-1].removesuffix(".tsv")


def collect_benchmarks(since: float) -> pd.DataFrame:
    rows = []
    for tsv in (ROOT / "logs" / "benchmarks").rglob("*.tsv"):
        if tsv.stat().st_mtime < since:
            continue  # a job of an earlier run (not rerun now)
        b = pd.read_csv(tsv, sep="\t").iloc[-1]
        rows.append({"job": str(tsv.relative_to(ROOT / "logs" / "benchmarks")), "stage": stage_of(tsv),
                     "seconds": float(b["s"]), "max_rss_mb": float(b.get("max_rss", float("nan")))})  # fmt: skip
    return pd.DataFrame(rows, columns=["job", "stage", "seconds", "max_rss_mb"])


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ablations", action="store_true", help="add the ablation overlay")
    ap.add_argument("--fresh", action="store_true", help="remove CIFAKE data and results first")
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    overlays = ["experiments/cifake.yaml"] + (
        ["experiments/cifake-ablations.yaml"] if args.ablations else []
    )
    if args.fresh:  # only this experiment's outputs (and the CIFAKE data, re-derived alike)
        own = own_stores(ROOT, overlays)  # its teachers and caches no other experiment uses
        for d in ("data/raw/cifake", "data/processed/cifake", "data/manifests/cifake",
                  "results/cifake", "results/report/cifake", *own):  # fmt: skip
            print("- removing", d, flush=True)
            shutil.rmtree(ROOT / d, ignore_errors=True)
    snakemake = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))
    cmd = [
        snakemake,
        "--profile",
        "profiles/local",
        "--cores",
        str(args.cores),
        "--configfile",
        *overlays,
    ]
    print("+", " ".join(cmd), flush=True)
    t0 = time.time()
    rc = subprocess.run(cmd, cwd=ROOT, check=False).returncode
    wall = time.time() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    jobs = collect_benchmarks(t0 - 1)
    per_stage = jobs.groupby("stage").agg(jobs=("job", "count"), seconds=("seconds", "sum"),
                                          max_rss_mb=("max_rss_mb", "max")).reset_index()  # fmt: skip
    metrics_path = ROOT / "results" / "cifake" / "metrics" / "metrics.parquet"
    metrics = []
    if metrics_path.exists():
        m = pd.read_parquet(metrics_path)
        keep = ["detector", "dataset", "generator", "n_real", "n_fake", "threshold", "accuracy", "accuracy_at_0.5",
                "real_accuracy", "fake_accuracy", "ap", "auc", "object_accuracy"]  # fmt: skip
        metrics = m[m["perturbation"] == "none"][[c for c in keep if c in m]].to_dict("records")
    out = {
        "command": " ".join(cmd),
        "returncode": rc,
        "wall_seconds": round(wall, 1),
        "wall_minutes": round(wall / 60, 2),
        "peak_rss_mb_largest_process": round(peak_mb, 1),
        "stages": per_stage.to_dict("records"),
        "jobs": jobs.sort_values("seconds", ascending=False).to_dict("records"),
        "metrics": metrics,
        "cores": args.cores,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    dest = (
        ROOT / "results" / "bench" / ("cifake-ablations.json" if args.ablations else "cifake.json")
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1, default=str))
    print(per_stage.to_string(index=False))
    print(f"wall {wall / 60:.1f} min, rc {rc}; wrote {dest.relative_to(ROOT)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
