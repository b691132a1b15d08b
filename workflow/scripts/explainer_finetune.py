"""Snakemake script for rule explainer_finetune: see sidflow.train.explainer_finetune."""

from sidflow.devices import set_threads
from sidflow.io import setup_logging
from sidflow.train.explainer_finetune import explainer_finetune

setup_logging(snakemake.log[0])
set_threads(snakemake.threads, getattr(snakemake.resources, "max_threads", 0))
explainer_finetune(
    dict(snakemake.params.settings),
    manifests=list(snakemake.input.manifests),
    processed_dirs=list(snakemake.input.processed),
    vqa_dir=snakemake.input.vqa[0] if snakemake.input.vqa else None,
    out_dir=snakemake.output[0],
    seed=snakemake.params.seed,
)
