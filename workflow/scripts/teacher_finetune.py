"""Snakemake script for rule teacher_finetune: see sidflow.train.teacher.finetune_teacher."""

from sidflow.devices import set_threads
from sidflow.io import setup_logging
from sidflow.models.teachers import TeacherConfig
from sidflow.train.teacher import FinetuneConfig, finetune_teacher

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
s = dict(snakemake.params.settings)
finetune_teacher(
    name=s["arch"],
    cfg=TeacherConfig(
        arch=s["arch"],
        checkpoint=s.get("checkpoint", "tiny"),
        image_size=snakemake.params.image_size,
        captions=dict(s.get("captions", {"real": "real", "fake": "fake"})),
        **({"tiny": dict(s["tiny"])} if "tiny" in s else {}),
    ),
    train_cfg=FinetuneConfig(**s.get("finetune", {}), seed=snakemake.params.seed),
    manifests=list(snakemake.input.manifests),
    processed_dirs=list(snakemake.input.processed),
    out_dir=snakemake.output[0],
)
