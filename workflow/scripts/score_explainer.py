"""Snakemake script for rule score_explainer: see sidflow.evaluate.scores.score_explainer_views."""

from sidflow.devices import set_threads
from sidflow.evaluate.scores import score_explainer_views
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
chains = dict(snakemake.params.chains)
score_explainer_views(
    snakemake.input.model,
    snakemake.input.manifest,
    snakemake.input.processed,
    "explainer",
    {view: (out, chains[view]) for view, out in zip(chains, snakemake.output, strict=True)},
)
