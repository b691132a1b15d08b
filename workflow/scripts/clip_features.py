"""Snakemake script for rules clip_features and clip_train_views: see
sidflow.cache.clip_features.build_clip_views."""

from sidflow.cache.clip_features import build_clip_views
from sidflow.devices import set_threads
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
chains = dict(snakemake.params.chains)  # view -> chain, in the order of the rule's outputs
build_clip_views(
    backbone_dir=snakemake.input.backbone,
    manifest=snakemake.input.manifest,
    processed_dir=snakemake.input.processed,
    views={v: (out, list(chains[v])) for v, out in zip(chains, snakemake.output, strict=True)},
    cache_root=snakemake.params.cache_root,
    augment=dict(snakemake.params.augment),
    seed=snakemake.params.seed,
    test_crop=snakemake.params.test_crop,
)
