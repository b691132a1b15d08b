"""Snakemake script for rule probe_rank: see sidflow.probe.grid.rank_cells."""

from pathlib import Path

from sidflow.io import setup_logging
from sidflow.probe.grid import rank_cells

setup_logging(snakemake.log[0])
rank_cells(
    [Path(p).parent for p in snakemake.input],
    snakemake.output.ranking,
    snakemake.output.metrics,
)
