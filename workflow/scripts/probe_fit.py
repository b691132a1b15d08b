"""Snakemake script for rule probe_fit: see sidflow.probe.grid.fit_cell."""

from pathlib import Path

from sidflow.devices import set_threads
from sidflow.io import setup_logging
from sidflow.probe.grid import fit_cell

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
w = snakemake.wildcards
fit_cell(
    features={t: [list(p) for p in parts] for t, parts in snakemake.params.features.items()},
    train_generators=list(snakemake.params.train_generators),
    backbone=w.backbone,
    reduction=w.reduction,
    reduction_spec=dict(snakemake.params.reduction_spec),
    classifier=w.classifier,
    transform=w.transform,
    out_dir=Path(snakemake.output.card).parent,
    seed=snakemake.params.seed,
    max_train=snakemake.params.max_train,
)
