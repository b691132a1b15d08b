"""Snakemake script for rule explain_gallery: see sidflow.evaluate.vqa_run.explain_gallery."""

from sidflow.devices import set_threads
from sidflow.evaluate.vqa_run import explain_gallery
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
explain_gallery(
    snakemake.input.model,
    list(snakemake.input.manifests),
    list(snakemake.input.processed),
    snakemake.output[0],
    gradcam_dir=snakemake.input.gradcam[0] if snakemake.input.gradcam else None,
    per_generator=snakemake.params.per_generator,
    seed=snakemake.params.seed,
)
