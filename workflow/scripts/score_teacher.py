"""Snakemake script for rule score_teacher: see sidflow.evaluate.scores.score_teacher_from_cache."""

from sidflow.evaluate.scores import score_teacher_from_cache
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
score_teacher_from_cache(
    cache_path=snakemake.input.cache,
    manifest=snakemake.input.manifest,
    detector=snakemake.params.detector,
    out_path=snakemake.output.scores,
    caption_detector=snakemake.params.caption_detector,
    caption_out=snakemake.output.captions,
)
