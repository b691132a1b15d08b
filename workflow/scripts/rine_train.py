"""Snakemake script for rule rine_train: see sidflow.train.rine.train_rine."""

from pathlib import Path

from sidflow.devices import set_threads
from sidflow.io import setup_logging
from sidflow.train.rine import train_rine

setup_logging(snakemake.log[0])
set_threads(snakemake.threads, getattr(snakemake.resources, "max_threads", 0))
train_rine(
    manifests=list(snakemake.input.manifests),
    train_features={v: list(p) for v, p in snakemake.params.train_features.items()},
    val_features=list(snakemake.input.val),
    settings=dict(snakemake.params.settings),
    seed=snakemake.params.seed,
    out_dir=snakemake.output[0],
    backbone_card=str(Path(snakemake.input.backbone) / "card.json"),
    preprocess=dict(snakemake.params.preprocess),
    test_crop=snakemake.params.test_crop,
    online=dict(snakemake.params.online) if snakemake.params.online else None,
)
