"""Snakemake script for rule score_student: see sidflow.evaluate.scores.score_student_views."""

from sidflow.devices import set_threads
from sidflow.evaluate.scores import score_student_views
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
chains = dict(snakemake.params.chains)
score_student_views(
    model_dir=snakemake.input.model,
    manifest=snakemake.input.manifest,
    processed_dir=snakemake.input.processed,
    detector=snakemake.wildcards.student,
    # the outputs are the rule's views, in order
    views={v: (out, list(chains[v])) for v, out in zip(chains, snakemake.output, strict=True)},
)
