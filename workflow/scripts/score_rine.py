"""Snakemake script for rule score_rine: see sidflow.train.rine.score_rine."""

from sidflow.io import setup_logging
from sidflow.train.rine import score_rine

setup_logging(snakemake.log[0])
score_rine(
    model_dir=snakemake.input.model,
    manifest=snakemake.input.manifest,
    features=snakemake.input.features,
    detector=snakemake.wildcards.rine,
    out_path=snakemake.output[0],
    perturbation=snakemake.wildcards.perturbation,
)
