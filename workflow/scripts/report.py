"""Snakemake script for rule report: see sidflow.report.html.build_report."""

from sidflow.io import setup_logging
from sidflow.report.html import build_report

setup_logging(snakemake.log[0])
inputs, params = snakemake.input, snakemake.params
build_report(
    metrics_path=inputs.metrics,
    comparisons_path=inputs.comparisons,
    curve_paths={c: inputs[c] for c in ("roc", "pr", "calibration", "attribution")},
    audit_path=inputs.get("audit"),
    gradcam_dirs=dict(params.gradcam_dirs),
    probe_files=(inputs.probe_ranking, inputs.probe_cross, inputs.probe_cross_best)
    if "probe_ranking" in inputs.keys()
    else None,
    processed_dirs=dict(params.processed_dirs),
    manifest_summaries=dict(params.manifest_summaries),
    model_cards=dict(params.model_cards),
    detector_kinds=dict(params.detector_kinds),
    dataset_notes=dict(params.dataset_notes),
    explainer_dir=inputs.get("explainer"),
    explanations_path=inputs.get("explanations"),
    vqa_errors_path=inputs.get("vqa_errors"),
    probe_metrics_path=inputs.get("probe_metrics"),
    min_class_count=params.min_class_count,
    config=snakemake.config,
    out_html=snakemake.output[0],
    experiment=snakemake.wildcards.experiment,
)
