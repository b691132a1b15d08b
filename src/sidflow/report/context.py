"""What every report section reads: the loaded metrics, the detectors' kinds and the paths
of the step outputs (keyed by detector, generator or figure; nothing is parsed from a path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sidflow.registry import DETECTOR_KINDS, DetectorKind
from sidflow.tables import POOLED

# fewer test images than this of a class a row needs and the report marks the row (config:
# report.min_class_count)
DEFAULT_MIN_CLASS_COUNT = 30


@dataclass
class ReportData:
    """Inputs of one experiment's report.

    ``kinds``: detector name -> its kind (from the plan); a detector missing from it counts
    as an ordinary, ranked detector. ``curves``: ``roc``/``pr``/``calibration`` -> CSV of
    points. ``processed_dirs`` / ``manifest_summaries``: ``dataset/generator`` -> the
    preprocess folder / the label step's summary JSON. ``model_cards`` and ``gradcam_dirs``:
    detector -> its model card / Grad-CAM gallery. ``probe_files``: (ranking.csv, cross.csv[, cross-best.csv]).
    ``explainer_card`` / ``explanations`` / ``vqa_errors``: the explainer's outputs (None if absent).
    ``probe_metrics``: every probe-grid cell's metrics table (same columns as ``metrics``; None
    without the grid). ``min_class_count``: a row resting on fewer test images of a class it
    needs is marked and listed in the warning box (:mod:`sidflow.report.caveats`).
    """

    experiment: str
    metrics: pd.DataFrame
    kinds: dict[str, DetectorKind] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    dataset_notes: dict[str, str] = field(default_factory=dict)
    comparisons: pd.DataFrame | None = None
    curves: dict[str, str] = field(default_factory=dict)
    audit_path: str | Path | None = None
    gradcam_dirs: dict[str, str] = field(default_factory=dict)
    probe_files: tuple[str, ...] | None = None
    processed_dirs: dict[str, str] = field(default_factory=dict)
    manifest_summaries: dict[str, str] = field(default_factory=dict)
    model_cards: dict[str, str] = field(default_factory=dict)
    # the explainer: its card.json, gallery.json and VQA error table ("" / None when absent)
    explainer_card: str | None = None
    explanations: str | None = None
    vqa_errors: str | None = None
    probe_metrics: pd.DataFrame | None = None
    min_class_count: int = DEFAULT_MIN_CLASS_COUNT

    @staticmethod
    def resolve_kinds(kinds: dict[str, str | DetectorKind] | None) -> dict[str, DetectorKind]:
        """Kind names (as the plan hands them to the rule) -> :class:`DetectorKind`."""
        return {
            name: kind if isinstance(kind, DetectorKind) else DETECTOR_KINDS.get(kind)
            for name, kind in (kinds or {}).items()
        }

    def is_ranked(self, detector: str) -> bool:
        kind = self.kinds.get(detector)
        return kind is None or kind.ranked

    def of_kind(self, kind: str) -> list[str]:
        return [name for name, k in self.kinds.items() if k.name == kind]

    def ranked(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The rows of ranked detectors (not controls such as the metadata audit)."""
        return rows[rows["detector"].map(self.is_ranked).astype(bool)]

    def pooled(self) -> pd.DataFrame:
        """Pooled (all generators) rows on clean images."""
        return pooled_rows(self.metrics)

    def probe_pooled(self) -> pd.DataFrame:
        """The probe-grid cells' pooled clean rows (empty without the grid)."""
        if self.probe_metrics is None or self.probe_metrics.empty:
            return self.metrics.iloc[:0]
        return pooled_rows(self.probe_metrics)


def pooled_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The pooled (all generators) rows of a metrics table on clean images."""
    if metrics.empty or "generator" not in metrics:
        return metrics
    return metrics[(metrics["generator"] == POOLED) & (metrics["perturbation"] == "none")]
