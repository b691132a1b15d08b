"""Snakemake script for rule probe_cross: see sidflow.probe.grid.cross_matrix."""

from sidflow.devices import set_threads
from sidflow.io import setup_logging
from sidflow.probe.grid import cross_matrix

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
cross_matrix(
    parts=[list(p) for p in snakemake.params.parts],
    reduction_spec=dict(snakemake.params.reduction_spec),
    classifier=snakemake.params.classifier,
    out_csv=snakemake.output[0],
    seed=snakemake.params.seed,
    max_train=snakemake.params.max_train,
)
