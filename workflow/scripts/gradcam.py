"""Snakemake script for rule gradcam: see sidflow.evaluate.gradcam.gradcam_gallery."""

from sidflow.devices import set_threads
from sidflow.evaluate.gradcam import gradcam_gallery
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
opts = snakemake.params.gradcam
gradcam_gallery(
    model_dir=snakemake.input.model,
    manifests=list(snakemake.input.manifests),
    processed_dirs=list(snakemake.input.processed),
    score_paths=list(snakemake.input.scores),
    out_dir=snakemake.output[0],
    per_group=opts["per_group"],
    layer=opts["layer"],
    size=opts["size"],
    seed=snakemake.params.seed,
)
