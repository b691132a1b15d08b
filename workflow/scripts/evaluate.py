"""Snakemake script for rule evaluate: see sidflow.evaluate.metrics.run_evaluation."""

from sidflow.evaluate.compare import comparison_pairs
from sidflow.evaluate.metrics import run_evaluation
from sidflow.io import setup_logging

setup_logging(snakemake.log[0])
run_evaluation(
    score_paths=list(snakemake.input),
    train_generators=list(snakemake.params.train_generators),
    table_path=snakemake.output.table,
    csv_path=snakemake.output.csv,
    json_path=snakemake.output.json,
    pairs=comparison_pairs(snakemake.params.students, list(snakemake.params.run_students)),
    comparisons_path=snakemake.output.comparisons,
    plots_dir=snakemake.params.plots_dir,
    real_pairs=dict(snakemake.params.real_pairs),
)
