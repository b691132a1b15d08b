"""Snakemake script for rule score_student: see sidflow.evaluate.scores.score_student."""

from sidflow.devices import set_threads
from sidflow.evaluate.scores import score_student
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
score_student(
    model_dir=snakemake.input.model,
    manifest=snakemake.input.manifest,
    processed_dir=snakemake.input.processed,
    detector=snakemake.wildcards.student,
    out_path=snakemake.output[0],
    perturbation=snakemake.wildcards.perturbation,
    chain=list(snakemake.params.chain),
)
