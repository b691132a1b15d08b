"""Snakemake script for rule teacher_finetune: see sidflow.train.teacher.finetune_teacher."""

from sidflow.devices import set_threads
from sidflow.io import setup_logging
from sidflow.models.teachers import teacher_config_from_settings
from sidflow.train.teacher import FinetuneConfig, finetune_teacher

setup_logging(snakemake.log[0])
set_threads(snakemake.threads, getattr(snakemake.resources, "max_threads", 0))
settings = dict(snakemake.params.settings)
finetune_teacher(
    name=settings["arch"],
    cfg=teacher_config_from_settings(settings, snakemake.params.image_size),
    train_cfg=FinetuneConfig(**settings.get("finetune", {}), seed=snakemake.params.seed),
    manifests=list(snakemake.input.manifests),
    processed_dirs=list(snakemake.input.processed),
    out_dir=snakemake.output[0],
)
