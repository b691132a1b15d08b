"""Snakemake script for rule report: see sidflow.report.html.build_report."""

from pathlib import Path

from sidflow.io import setup_logging
from sidflow.report.html import build_report

setup_logging(snakemake.log[0])


def key(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name.split('.')[0]}"


config = snakemake.params.config
models = {}
for m in snakemake.input.models:
    card = Path(m) / ("card.json" if (Path(m) / "card.json").exists() else "student.json")
    models[("teacher-" if "teachers" in Path(m).parts else "") + Path(m).name] = str(card)
build_report(
    metrics_path=snakemake.input.metrics,
    comparisons_path=snakemake.input.comparisons,
    plots_dir=str(Path(snakemake.input.roc).parent),
    audit_path=snakemake.input.audit[0] if snakemake.input.audit else None,
    gradcam_dirs=list(snakemake.input.gradcam),
    probe_files=list(snakemake.input.probe),  # [ranking.csv, cross.csv] when the grid runs
    preprocess_summaries={key(p): str(Path(p) / "summary.json") for p in snakemake.input.processed},
    manifest_summaries={
        key(p): p.replace(".parquet", ".summary.json") for p in snakemake.input.manifests
    },
    quarantine_files={
        key(p): str(Path(p) / "quarantine.parquet") for p in snakemake.input.processed
    },
    model_cards=models,
    config=config,
    out_html=snakemake.output[0],
    experiment=snakemake.wildcards.experiment,
    dataset_notes={d: config["datasets"][d].get("note", "") for d in config["use_datasets"]},
)
