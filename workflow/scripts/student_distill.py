"""Snakemake script for rule student_distill: see sidflow.train.distill.train_student.

With ``resources: gpu`` > 1 (set in the SLURM profile) the same training runs data-parallel
under ``torchrun`` (one process per GPU) through ``sidflow train-student --spec``.
With ``splits.mode: kfold`` it trains one model per fold (sidflow.train.kfold).
"""

from sidflow.devices import set_threads
from sidflow.io import setup_logging
from sidflow.train.launch import launch_student_training

setup_logging(snakemake.log[0])
set_threads(snakemake.threads, getattr(snakemake.resources, "max_threads", 0))
launch_student_training(
    {
        "student": dict(
            snakemake.params.student, image_size=snakemake.params.preprocess["image_size"]
        ),
        "distill": dict(snakemake.params.settings) | {"seed": snakemake.params.seed},
        "manifests": list(snakemake.input.manifests),
        "processed_dirs": list(snakemake.input.processed),
        "cache_paths": {t: list(p) for t, p in snakemake.params.cache_paths.items()},
        "out_dir": snakemake.output[0],
        "checkpoint_dir": snakemake.params.checkpoint,
        "preprocess": dict(snakemake.params.preprocess),
        "kfold": snakemake.params.kfold,
    },
    nproc=int(getattr(snakemake.resources, "gpu", 0) or 0),
    log_path=snakemake.log[0],
)
