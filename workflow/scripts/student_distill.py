"""Snakemake script for rule student_distill: see sidflow.train.distill.train_student."""

from collections import defaultdict
from pathlib import Path

from sidflow.devices import set_threads
from sidflow.io import setup_logging
from sidflow.models.student import StudentConfig
from sidflow.train.distill import DistillConfig, train_student

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
caches = defaultdict(list)
for path in snakemake.input.caches:
    caches[Path(path).parts[2]].append(
        path
    )  # results/cache/<teacher>/<dataset>/<generator>.parquet
settings = {k: v for k, v in dict(snakemake.params.settings).items() if k != "teachers"}
train_student(
    student_cfg=StudentConfig(
        **snakemake.params.student, image_size=snakemake.params.preprocess["image_size"]
    ),
    cfg=DistillConfig(**settings, seed=snakemake.params.seed),
    manifests=list(snakemake.input.manifests),
    processed_dirs=list(snakemake.input.processed),
    cache_paths=dict(caches),
    out_dir=snakemake.output[0],
    preprocess=dict(snakemake.params.preprocess),
)
