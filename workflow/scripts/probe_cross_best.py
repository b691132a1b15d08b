"""Snakemake script for rule probe_cross_best: see sidflow.probe.grid.cross_best."""

from sidflow.devices import set_threads
from sidflow.io import setup_logging
from sidflow.probe.grid import cross_best

setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
cross_best(
    ranking_csv=snakemake.input.ranking,
    features={
        b: {t: [list(p) for p in parts] for t, parts in by_t.items()}
        for b, by_t in snakemake.params.features.items()
    },
    reductions={k: dict(v) for k, v in snakemake.params.reductions.items()},
    out_csv=snakemake.output[0],
    seed=snakemake.params.seed,
    max_train=snakemake.params.max_train,
)
