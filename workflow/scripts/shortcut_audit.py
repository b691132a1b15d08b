"""Snakemake script for rule shortcut_audit: see sidflow.audit.shortcut.run_shortcut_audit."""

from sidflow.audit.shortcut import run_shortcut_audit
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
keys = list(snakemake.params.generator_keys)
run_shortcut_audit(
    metadata_paths=dict(zip(keys, snakemake.input.metadata, strict=True)),
    manifest_paths=dict(zip(keys, snakemake.input.manifests, strict=True)),
    train_keys=list(snakemake.params.train_keys),
    score_paths=dict(zip(keys, snakemake.output.scores, strict=True)),
    summary_path=snakemake.output.summary,
    seed=snakemake.params.seed,
)
