"""Snakemake script for rule vqa_data: see sidflow.data.vqa_data.extract_vqa_archive."""

from sidflow.data.vqa_data import extract_vqa_archive
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
extract_vqa_archive(snakemake.input[0], snakemake.params.sha256, snakemake.output[0])
