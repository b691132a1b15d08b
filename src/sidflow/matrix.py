"""Cross-generator and leave-one-generator-out (LOGO) matrices of experiments.

A matrix is a family of ordinary experiments, one per *cell*, that differ only in
their training generators; every cell tests on every generator of the datasets in use.

- ``cross``: train on the reals plus ONE fake generator, for each fake generator.
- ``logo``: train on the reals plus every fake generator but one, for each one left out.

Each cell is written as an overlay (``results/matrix/<name>/cells/<cell>.yaml``) and run
as its own Snakemake invocation, so the data steps (download, preprocess, label,
metadata) are shared and only the per-experiment steps run per cell. The matrix table
(train cell x test generator x detector: AP, AUC, accuracy, in-distribution flag) is
collected from the cells' ``metrics.parquet`` into ``results/matrix/<name>/matrix.csv``
and a small HTML page.

A KD student may be a cell's detector: a teacher's folder is keyed by what determines it
(``results/teachers/<name>/<key>``, the key covering its training generators), so each
cell trains its own teachers on its own generators, and one whose ``train_generators`` are
pinned is trained once and shared by every cell.

    sidflow matrix --mode cross --configfile experiments/lsun-cross.yaml          # run all cells
    sidflow matrix --mode logo --configfile experiments/lsun-cross.yaml --dry-run # list them
"""

from __future__ import annotations

import html
import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from sidflow.config import ConfigError, Plan, load_config, load_sheet
from sidflow.io import atomic_path, write_parquet
from sidflow.tables import MEAN, POOLED

log = logging.getLogger(__name__)
MODES = ("cross", "logo")


def matrix_cells(cfg: dict, mode: str) -> dict[str, list[str]]:
    """{cell experiment name: train generator keys} for ``mode`` over the datasets in use."""
    if mode not in MODES:
        raise ConfigError(f"matrix mode must be one of {MODES}, got {mode!r}")
    plan = Plan(cfg, load_sheet(cfg["generators_sheet"]))
    exp = cfg["experiment"]
    reals, fakes = [], []
    for dataset, generator in plan.generators():
        row = plan.generator_row(dataset, generator)
        (reals if row["label"] == "real" else fakes).append(f"{dataset}/{generator}")
    if not reals or len(fakes) < 2:
        raise ConfigError(
            f"matrix: needs real generators and at least two fake ones, has {reals} / {fakes}"
        )
    cells = {}
    for fake in fakes:
        slug = fake.replace("/", "-")
        if mode == "cross":
            cells[f"{exp['name']}-x-{slug}"] = reals + [fake]
        else:
            cells[f"{exp['name']}-logo-{slug}"] = reals + [f for f in fakes if f != fake]
    too_long = [c for c in cells if len(c) > 64]
    if too_long:
        raise ConfigError(
            f"matrix: cell names over 64 characters {too_long}; shorten experiment.name"
        )
    return cells


def write_cell_overlays(cells: dict[str, list[str]], out_dir: str | Path) -> dict[str, Path]:
    """One overlay per cell that sets only the experiment's name and training generators."""
    paths = {}
    for name, train in cells.items():
        path = Path(out_dir) / f"{name}.yaml"
        with atomic_path(path, suffix=".yaml") as tmp:
            tmp.write_text(yaml.safe_dump({"experiment": {"name": name, "train_generators": train,
                                                          "test_generators": "all"}}, sort_keys=False))  # fmt: skip
        paths[name] = path
    return paths


def collect_matrix(cells: dict[str, list[str]], results: str | Path = "results") -> pd.DataFrame:
    """Tidy matrix: one row per (cell, detector, test generator) from the cells' metrics."""
    frames = []
    for name, train in cells.items():
        path = Path(results) / name / "metrics" / "metrics.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{path}: cell {name!r} has not been run")
        m = pd.read_parquet(path)
        m = m[(m["perturbation"] == "none") & ~m["generator"].isin([POOLED, MEAN]) & ~m["is_real"]]
        frames.append(
            m.assign(cell=name, train=" + ".join(t for t in train if not t.endswith("/real")))
        )
    cols = ["cell", "train", "detector", "dataset", "generator", "in_distribution", "n_real", "n_fake", "ap",
            "auc", "accuracy", "fake_accuracy"]  # fmt: skip
    return pd.concat(frames, ignore_index=True)[cols]


def matrix_html(table: pd.DataFrame, title: str, metric: str = "ap", min_count: int = 30) -> str:
    """One AP grid per detector: rows = training cell, columns = test generator; * = in-distribution.
    The first row gives each column's test images (real / fake) and marks a column resting on
    fewer than ``min_count`` images of a class (``report.min_class_count``)."""
    from sidflow.report.caveats import MARK

    parts = [f"<h1>{html.escape(title)}</h1><p>{metric.upper()} on each test generator's test split "
             "(its fakes vs its dataset's real test images); * marks a generator seen in training; "
             f"{MARK} marks a test generator with fewer than {min_count} test images of a class "
             "(wide intervals: one image moves the value a lot).</p>"]  # fmt: skip
    for detector, d in table.groupby("detector", sort=True):
        d = d.assign(test=d["dataset"] + "/" + d["generator"])
        cell = d.apply(lambda r: f"{r[metric]:.3f}{'*' if r['in_distribution'] else ''}", axis=1)
        grid = d.assign(v=cell).pivot(index="train", columns="test", values="v")
        counts = d.groupby("test")[["n_real", "n_fake"]].max()
        small = (counts["n_real"] < min_count) | (counts["n_fake"] < min_count)
        first = pd.DataFrame([{t: f"{int(r.n_real)} / {int(r.n_fake)}{' ' + MARK if small[t] else ''}"
                               for t, r in counts.iterrows()}], index=["test images (real / fake)"])  # fmt: skip
        parts.append(
            f"<h2>{html.escape(detector)}</h2>" + pd.concat([first, grid]).to_html(escape=True)
        )
    style = "body{font-family:system-ui,sans-serif;margin:2rem}td,th{border:1px solid #ddd;padding:.2rem .5rem}"
    return f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{style}</style></head><body>{"".join(parts)}</body></html>'


def run_matrix(
    mode: str, configfiles: list[str], profile: str = "profiles/local", dry_run: bool = False
) -> int:
    """Run every cell with Snakemake (no shell; arguments as a list), then collect the matrix."""
    cfg = load_config("config.yaml", overlays=configfiles)
    cells = matrix_cells(cfg, mode)
    name = f"{cfg['experiment']['name']}-{mode}"
    out = Path("results/matrix") / name
    overlays = write_cell_overlays(cells, out / "cells")
    for cell, overlay in overlays.items():
        cmd = [
            sys.executable,
            "-m",
            "snakemake",
            "--profile",
            profile,
            "--configfile",
            *configfiles,
            str(overlay),
        ]
        if dry_run:
            cmd.append("-n")
        log.info("cell %s: %s", cell, " ".join(cmd))
        print(f"# cell {cell}: train on {', '.join(cells[cell])}", file=sys.stderr)
        rc = subprocess.run(cmd, check=False).returncode
        if rc:
            print(f"# cell {cell} failed (exit {rc}); later cells not run", file=sys.stderr)
            return rc
    if dry_run:
        return 0
    table = collect_matrix(cells)
    write_parquet(out / "matrix.parquet", table)
    table.to_csv(out / "matrix.csv", index=False)
    with atomic_path(out / "index.html", suffix=".html") as tmp:
        title = f"sidflow {mode} matrix: {cfg['experiment']['name']}"
        tmp.write_text(matrix_html(table, title, min_count=cfg["report"]["min_class_count"]))
    print(f"# matrix: {out / 'matrix.csv'}, {out / 'index.html'}", file=sys.stderr)
    return 0
