"""Report step: one self-contained HTML page per experiment (no network, opens from disk).

Reads only the metrics table, the step summaries (preprocess, label), the model cards and
the config. Every number on the page comes from those files and is written by
:func:`sidflow.report.format.num`. The page is the concatenation of :data:`SECTIONS`, small
functions of the :class:`~sidflow.report.context.ReportData` that each return an HTML
fragment (``""`` when they have nothing to show).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from sidflow.io import atomic_path
from sidflow.registry import DetectorKind
from sidflow.report.caveats import warnings_section
from sidflow.report.context import DEFAULT_MIN_CLASS_COUNT, ReportData
from sidflow.report.explain_section import explanations_section
from sidflow.report.probe_section import probe_section
from sidflow.report.sections import audit_section, gradcam_section
from sidflow.report.sections_metrics import (
    ablation_section,
    all_metrics_section,
    attribution_section,
    curves_section,
    per_generator_section,
    per_generator_table,
    robustness_section,
    summary_section,
)
from sidflow.report.sections_models import (
    code_version,
    dataset_card_section,
    finetune_cost_section,
    models_section,
    provenance_section,
    rine_section,
)

__all__ = ["SECTIONS", "build_report", "code_version", "per_generator_table", "render"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5rem 1rem}
.id{color:#555;font-style:italic}.figs{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0}
figcaption{font-size:.75rem;color:#555}.verdict{background:#eef6ff;border-left:4px solid #3b82f6;padding:.5rem 1rem}pre{background:#f6f8fa;padding:1rem;overflow:auto;font-size:.8rem}
.warn{background:#fdecea;border-left:4px solid #d93025;padding:.5rem 1rem}tr.small td{background:#fff1f0}tr.counts td{font-size:.75rem;color:#555}
"""


def title_section(r: ReportData) -> str:
    return f"<h1>sidflow report: {html.escape(r.experiment)}</h1>"


def notes_section(r: ReportData) -> str:
    """Each dataset's note from the config (what its numbers can and cannot say)."""
    return "".join(
        f'<p class="note"><b>{html.escape(name)}</b>: {html.escape(note)}</p>'
        for name, note in r.dataset_notes.items()
    )


def audit_step_section(r: ReportData) -> str:
    return audit_section(r.audit_path, r.metrics, r.kinds)


def gradcam_step_section(r: ReportData) -> str:
    return gradcam_section(r.gradcam_dirs)


def explanations_step_section(r: ReportData) -> str:
    vqa = r.config.get("explainer", {}).get("vqa", {}).get("archive")
    return explanations_section(r.explainer_card, r.explanations, r.vqa_errors, vqa)


def probe_step_section(r: ReportData) -> str:
    """The probe grid's section, with the cells' test counts when their metrics are known."""
    if not r.probe_files:
        return ""
    return probe_section(*r.probe_files, metrics=r.probe_metrics, min_count=r.min_class_count)


SECTIONS: list[Callable[[ReportData], str]] = [
    title_section,
    warnings_section,
    notes_section,
    summary_section,
    ablation_section,
    curves_section,
    per_generator_section,
    attribution_section,
    all_metrics_section,
    robustness_section,
    audit_step_section,
    gradcam_step_section,
    explanations_step_section,
    rine_section,
    probe_step_section,
    dataset_card_section,
    finetune_cost_section,
    models_section,
    provenance_section,
]


def render(r: ReportData) -> str:
    """The whole page."""
    body = "".join(section(r) for section in SECTIONS)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>sidflow: '
        f"{html.escape(r.experiment)}</title><style>{CSS}</style></head><body>{body}</body></html>"
    )


def build_report(
    metrics_path: str | Path,
    config: dict,
    out_html: str | Path,
    experiment: str,
    detector_kinds: Mapping[str, str | DetectorKind],
    processed_dirs: Mapping[str, str] | None = None,
    manifest_summaries: Mapping[str, str] | None = None,
    model_cards: Mapping[str, str] | None = None,
    dataset_notes: Mapping[str, str] | None = None,
    comparisons_path: str | Path | None = None,
    curve_paths: Mapping[str, str] | None = None,
    audit_path: str | Path | None = None,
    gradcam_dirs: Mapping[str, str] | None = None,
    probe_files: tuple[str, ...] | list[str] | None = None,
    explainer_dir: str | Path | None = None,
    explanations_path: str | Path | None = None,
    vqa_errors_path: str | Path | None = None,
    probe_metrics_path: str | Path | None = None,
    min_class_count: int | None = None,
) -> None:
    """Write the report of ``experiment`` to ``out_html`` (see :class:`ReportData` for the
    keyed inputs; ``detector_kinds``: detector -> kind name, from the plan).
    ``probe_metrics_path``: the probe cells' metrics (they compete for best detector);
    ``min_class_count``: default ``config["report"]["min_class_count"]``, else 30."""
    if min_class_count is None:
        min_class_count = (config.get("report") or {}).get(
            "min_class_count", DEFAULT_MIN_CLASS_COUNT
        )
    data = ReportData(
        experiment=experiment,
        metrics=pd.read_parquet(metrics_path),
        kinds=ReportData.resolve_kinds(dict(detector_kinds)),
        config=config,
        dataset_notes=dict(dataset_notes or {}),
        comparisons=pd.read_csv(comparisons_path) if comparisons_path else None,
        curves=dict(curve_paths or {}),
        audit_path=audit_path,
        gradcam_dirs=dict(gradcam_dirs or {}),
        probe_files=tuple(probe_files) if probe_files else None,
        processed_dirs=dict(processed_dirs or {}),
        manifest_summaries=dict(manifest_summaries or {}),
        model_cards=dict(model_cards or {}),
        explainer_card=str(Path(explainer_dir) / "card.json") if explainer_dir else None,
        explanations=str(explanations_path) if explanations_path else None,
        vqa_errors=str(vqa_errors_path) if vqa_errors_path else None,
        probe_metrics=pd.read_parquet(probe_metrics_path) if probe_metrics_path else None,
        min_class_count=int(min_class_count),
    )
    page = render(data)
    with atomic_path(out_html, suffix=".html") as tmp:
        tmp.write_text(page)
