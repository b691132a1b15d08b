"""What every report section reads: the loaded metrics, the detectors' kinds and the paths
of the step outputs (keyed by detector, generator or figure; nothing is parsed from a path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sidflow.registry import DETECTOR_KINDS, DetectorKind


@dataclass
class ReportData:
    """Inputs of one experiment's report.

    ``kinds``: detector name -> its kind (from the plan); a detector missing from it counts
    as an ordinary, ranked detector. ``curves``: ``roc``/``pr``/``calibration`` -> CSV of
    points. ``processed_dirs`` / ``manifest_summaries``: ``dataset/generator`` -> the
    preprocess folder / the label step's summary JSON. ``model_cards`` and ``gradcam_dirs``:
    detector -> its model card / Grad-CAM gallery. ``probe_files``: (ranking.csv, cross.csv[, cross-best.csv]).
    ``explainer_card`` / ``explanations`` / ``vqa_errors``: the explainer's outputs (None if absent).
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
        m = self.metrics
        return m[(m["generator"] == "all") & (m["perturbation"] == "none")]
