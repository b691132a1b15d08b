"""Benchmark: the pipeline's own costs (issue #21's "job fixed cost", "demo" and "SLURM" rows).

    python bench/pipeline.py --job-cost          # seconds one Snakemake job costs beyond its work
    python bench/pipeline.py --demo              # the demo from a fresh clone (install not counted)
    python bench/pipeline.py --slurm             # tests/test_slurm.py's run on a one-node SLURM
    python bench/pipeline.py --job-cost --demo --slurm --out results/bench/pipeline.json

* ``--job-cost``: median wall time of ``python -c "import <entry point>"`` for the light steps'
  modules (download, preprocess, label, metadata, evaluate, score, report) and for the model
  steps' ones; and the *marginal* cost of one Snakemake ``script:`` job: a throw-away workflow
  of N independent jobs whose script imports the label step's module and writes one byte, run
  with ``-j1`` for N=1 and N=11; (wall(11) - wall(1)) / 10 is what each further job costs.
* ``--demo``: ``git clone`` of this checkout's HEAD into a temporary folder, then
  ``snakemake --profile profiles/local`` there with this interpreter's environment (the
  README's first Quickstart command without its install part); wall time, jobs run, and the
  jobs per rule.
* ``--slurm``: runs ``pytest tests/test_slurm.py`` (which starts slurmctld + slurmd and runs the
  shrunken demo through ``profiles/slurm``) and reports the fixture's setup time (the SLURM run;
  the test itself asserts fewer submissions than jobs) and the machine's mean busy cores over
  the pytest run (``student.Machine.busy_s``: the SLURM jobs are no children of it). Needs root and
  Debian's slurm-wlm (``bash .ci/system-packages.sh``).

Prints JSON; with ``--out`` also writes it. Run on a quiet machine: each figure is wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from student import Machine  # bench/student.py: the machine's busy CPU seconds

ROOT = Path(__file__).resolve().parents[1]
LIGHT = ["sidflow.data.sources", "sidflow.data.preprocess", "sidflow.data.manifest",
         "sidflow.audit.metadata", "sidflow.evaluate.metrics", "sidflow.evaluate.scores",
         "sidflow.report.html"]  # fmt: skip
HEAVY = ["sidflow.train.distill", "sidflow.models.teachers"]
TRIVIAL_SNAKEFILE = """
N = int(config["count"])
rule all:
    input: expand("out/{i}.txt", i=range(N))
rule one:
    output: "out/{i}.txt"
    script: "one.py"
"""
TRIVIAL_SCRIPT = """
import sidflow.data.manifest  # the label step's entry point
from pathlib import Path
Path(snakemake.output[0]).write_text("1")
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _timed(cmd: list[str], cwd: Path | None = None, timeout: int = 3600) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}"
        )
    return wall, r.stdout + r.stderr


def import_seconds(module: str, repeats: int = 5) -> float:
    return statistics.median(
        _timed([sys.executable, "-c", f"import {module}"])[0] for _ in range(repeats)
    )


def job_cost(repeats: int = 3) -> dict:
    out: dict = {"import_s": {m: round(import_seconds(m), 3) for m in LIGHT + HEAVY}}
    out["python_start_s"] = round(
        statistics.median(_timed([sys.executable, "-c", "pass"])[0] for _ in range(5)), 3
    )
    walls: dict[int, list[float]] = {1: [], 11: []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "Snakefile").write_text(TRIVIAL_SNAKEFILE)
        (work / "one.py").write_text(TRIVIAL_SCRIPT)
        for _ in range(repeats):
            for n in walls:
                for f in (work / "out").glob("*.txt"):
                    f.unlink()
                # --config last: it takes every following word as a key=value pair
                cmd = ["snakemake", "-j1", "all", "--config", f"count={n}"]
                walls[n].append(_timed(cmd, cwd=work)[0])
    w1, w11 = (statistics.median(walls[n]) for n in (1, 11))
    out.update(snakemake_1_job_s=round(w1, 2), snakemake_11_jobs_s=round(w11, 2),
               per_job_s=round((w11 - w1) / 10, 3))  # fmt: skip
    return out


def demo() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "sidflow"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone,
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        wall, log = _timed(["snakemake", "--profile", "profiles/local"], cwd=clone)
    rules = Counter(re.findall(r"^(?:local)?rule (\w+):", log, flags=re.M))
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", log)
    return {"commit": head, "wall_s": round(wall, 1), "minutes": round(wall / 60, 2),
            "jobs": int(done[-1][1]) if done else sum(rules.values()),
            "jobs_per_rule": dict(sorted(rules.items()))}  # fmt: skip


def slurm() -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0",
           "-s", "tests/test_slurm.py"]  # fmt: skip
    t0, cpu0 = time.perf_counter(), Machine.busy_s()
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=3600)
    wall, cpu = time.perf_counter() - t0, Machine.busy_s() - cpu0
    text = r.stdout + r.stderr
    # the first test's setup is the SLURM run (the second one's builds the local run)
    setup = re.search(r"([\d.]+)s setup\s+tests/test_slurm.py::test_every_job_ran", text)
    return {"rc": r.returncode, "pytest_wall_s": round(wall, 1),
            "slurm_run_s": float(setup.group(1)) if setup else None,
            "busy_cores_mean": round(cpu / wall, 2),  # the machine's, over the whole pytest run
            "summary": text.strip().splitlines()[-1] if text.strip() else ""}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--job-cost", action="store_true")
    ap.add_argument("--demo", action="store_true")
    ap.add_argument("--slurm", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not (args.job_cost or args.demo or args.slurm):
        ap.error("choose at least one of --job-cost, --demo, --slurm")
    res: dict = {"load_before": os.getloadavg()}
    if args.job_cost:
        res["job_cost"] = job_cost()
    if args.demo:
        res["demo"] = demo()
    if args.slurm:
        res["slurm"] = slurm()
    res["load_after"] = os.getloadavg()
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
