"""Snakemake script for rule label: see sidflow.data.manifest.label_generator."""

from sidflow.data.manifest import label_generator
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
label_generator(
    processed_dir=snakemake.input[0],
    manifest_path=snakemake.output.manifest,
    duplicates_path=snakemake.output.duplicates,
    dataset=snakemake.wildcards.dataset,
    generator=snakemake.wildcards.generator,
    label=snakemake.params.row["label"],
    fractions=dict(snakemake.params.splits),
    object_class=snakemake.params.object_class,
)
