"""Snakemake script for rule clip_features: see sidflow.cache.clip_features.build_clip_features."""

from sidflow.cache.clip_features import build_clip_features
from sidflow.devices import set_threads
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
build_clip_features(
    backbone_dir=snakemake.input.backbone,
    manifest=snakemake.input.manifest,
    processed_dir=snakemake.input.processed,
    out_path=snakemake.output[0],
    cache_root=snakemake.params.cache_root,
    view=snakemake.wildcards.view,
    augment=dict(snakemake.params.augment),
    chain=list(snakemake.params.chain),
    seed=snakemake.params.seed,
)
