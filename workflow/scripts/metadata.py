"""Snakemake script for rule metadata: see sidflow.audit.metadata.write_raw_metadata."""

from sidflow.audit.metadata import write_raw_metadata
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
write_raw_metadata(raw_dir=snakemake.input[0], out_path=snakemake.output[0])
