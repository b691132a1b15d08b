"""Snakemake script for rule preprocess: see sidflow.data.preprocess.preprocess_generator."""

from sidflow.data.preprocess import PreprocessParams, preprocess_generator
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
preprocess_generator(
    raw_dir=snakemake.input[0],
    out_dir=snakemake.output[0],
    params=PreprocessParams(**snakemake.params.preprocess),
    threads=snakemake.threads,
)
