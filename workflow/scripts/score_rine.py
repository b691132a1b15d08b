"""Snakemake script for rule score_rine: see sidflow.train.rine.score_rine_views."""

from sidflow.io import setup_logging
from sidflow.train.rine import score_rine_views

setup_logging(snakemake.log[0])
views = list(snakemake.params.views)  # the order of the rule's features and outputs
score_rine_views(
    model_dir=snakemake.input.model,
    manifest=snakemake.input.manifest,
    detector=snakemake.wildcards.rine,
    views={
        v: (f, out)
        for v, f, out in zip(views, snakemake.input.features, snakemake.output, strict=True)
    },
)
