"""Snakemake script for rule download: see sidflow.data.sources.fetch_generator."""

from sidflow.data.raw_index import write_index
from sidflow.data.sources import fetch_generator
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
fetch_generator(
    dataset=snakemake.wildcards.dataset,
    source=snakemake.params.source,
    generator=snakemake.params.row,
    dest=snakemake.output.raw,
    seed=snakemake.params.seed,
)
write_index(snakemake.output.raw, snakemake.output.index)
