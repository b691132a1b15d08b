"""Snakemake script for rule clip_backbone: see sidflow.cache.clip_features.backbone_step."""

from sidflow.cache.clip_features import backbone_step
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
backbone_step(dict(snakemake.params.settings), snakemake.params.seed, snakemake.output[0])
