"""Report section of the probe grid: ranked cells and the cross-generator heatmap.

Built only from ``results/<experiment>/probe/ranking.csv`` and ``cross.csv``.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from sidflow.report.format import num
from sidflow.report.plots import heatmap_svg

TOP = 25


def probe_section(ranking_csv: str | Path, cross_csv: str | Path) -> str:
    rank = pd.read_csv(ranking_csv)
    cols = ["rank", "backbone", "reduction", "classifier", "transform", "val_ap", "test_ap", "test_auc",
            "test_accuracy"] + [c for c in rank.columns if c.startswith("ap[")]  # fmt: skip
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{num(r[c])}</td>" for c in cols) + "</tr>"
        for _, r in rank.head(TOP).iterrows()
    )
    parts = [
        "<h2>Probe grid: frozen backbones + classical classifiers</h2>",
        f"<p>{len(rank)} cells (backbone, reduction, classifier, train-time transform) on cached "
        "features, ranked by <b>validation</b> AP (pooled, clean); test columns are pooled test AP/AUC/accuracy "
        "at the validation threshold, ap[generator] the clean test AP per generator and ap[transform] the pooled "
        f"test AP under each test-time transform. Top {min(TOP, len(rank))} shown; all in ranking.csv.</p>",
        f'<table class="probe"><tr>{head}</tr>{body}</table>',
    ]
    cross = pd.read_csv(cross_csv)
    if len(cross):
        mat = cross.pivot(index="train", columns="test", values="ap")
        parts.append(
            "<h3>Cross-generator matrix (AP; rows: trained on real + generator, columns: tested on)</h3>"
        )
        parts.append(heatmap_svg(mat, "probe: train on A, test on B (AP)"))
    return "".join(parts)
