"""Snakemake script for rule vqa_eval: see sidflow.evaluate.vqa_run.vqa_eval."""

from sidflow.devices import set_threads
from sidflow.evaluate.vqa_run import vqa_eval
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
vqa_eval(
    snakemake.input.model,
    snakemake.input.vqa,
    snakemake.output.answers,
    snakemake.output.errors,
    max_new_tokens=snakemake.params.max_new_tokens,
)
