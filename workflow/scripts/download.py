"""Snakemake script for rule download: see sidflow.data.sources.fetch_generator."""

from sidflow.data.sources import fetch_generator
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
fetch_generator(
    dataset=snakemake.wildcards.dataset,
    source=snakemake.params.source,
    generator=snakemake.params.row,
    dest=snakemake.output[0],
    seed=snakemake.params.seed,
)
