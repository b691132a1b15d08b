"""Snakemake script for rule probe_features: see sidflow.probe.features.compute_probe_features."""

from sidflow.devices import set_threads
from sidflow.io import setup_logging
from sidflow.probe.features import compute_probe_features

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
compute_probe_features(
    spec=dict(snakemake.params.spec),
    manifest=snakemake.input.manifest,
    processed_dir=snakemake.input.processed,
    chain=list(snakemake.params.chain),
    out_path=snakemake.output[0],
    cache_root=snakemake.params.cache_root,
    teacher_cache=snakemake.input.get("teacher_cache"),
)
