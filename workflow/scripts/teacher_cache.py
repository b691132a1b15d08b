"""Snakemake script for rule teacher_cache: see sidflow.cache.teacher_cache.build_teacher_cache."""

import json

from sidflow.cache.teacher_cache import build_teacher_cache
from sidflow.devices import set_threads
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
build_teacher_cache(
    teacher_dir=snakemake.input.teacher,
    manifest=snakemake.input.manifest,
    processed_dir=snakemake.input.processed,
    out_path=snakemake.output[0],
    preprocess_tag=json.dumps(dict(snakemake.params.preprocess), sort_keys=True),
    cache_root=snakemake.params.cache_root,
)
