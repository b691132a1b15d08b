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


def probe_section(
    ranking_csv: str | Path, cross_csv: str | Path, cross_best_csv: str | Path | None = None
) -> str:
    rank = pd.read_csv(ranking_csv)
    cols = ["rank", "backbone", "reduction", "classifier", "transform", "val_ap", "test_ap", "test_auc",
            "test_accuracy", "train_accuracy"] + [c for c in rank.columns if c.startswith("ap[")]  # fmt: skip
    cols = [c for c in cols if c in rank]
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
    parts.append(impact_section(rank))
    cross = pd.read_csv(cross_csv)
    if len(cross):
        mat = cross.pivot(index="train", columns="test", values="ap")
        parts.append(
            "<h3>Cross-generator matrix (AP; rows: trained on real + generator, columns: tested on)</h3>"
        )
        parts.append(heatmap_svg(mat, "probe: train on A, test on B (AP)"))
    if cross_best_csv:
        parts.append(cross_best_section(pd.read_csv(cross_best_csv)))
    return "".join(parts)


def cross_best_section(cross: pd.DataFrame) -> str:
    """Each backbone's best cell, its cross-generator transfer per train-time transform (mean
    AP off the diagonal, i.e. on generators it was not trained on) and its clean matrix."""
    if cross.empty:
        return ""
    off = cross[cross["train"] != cross["test"]]
    summary = off.groupby(["backbone", "reduction", "classifier", "transform"], sort=False)[
        "ap"
    ].mean()
    table = summary.unstack("transform").reset_index()
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(v)) if isinstance(v, str) else num(v)}</td>"
                                     for v in r) + "</tr>" for r in table.itertuples(index=False))  # fmt: skip
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    out = ["<h3>Best cell of each backbone: transfer to unseen generators</h3><p>Per backbone, its best cell "
           "by validation AP; mean AP of the cross-generator matrix off the diagonal (trained on real + A, tested "
           "on real + B, B unseen), one column per train-time transform (tests on clean images).</p>",
           f'<table class="probe"><tr>{head}</tr>{rows}</table>']  # fmt: skip
    for backbone, g in cross[cross["transform"] == "none"].groupby("backbone", sort=False):
        out.append(
            heatmap_svg(
                g.pivot(index="train", columns="test", values="ap"), f"{backbone}: best cell (AP)"
            )
        )
    return "".join(out)


FACTORS = ("transform", "reduction", "classifier", "backbone")


def goodness(rank: pd.DataFrame, line: tuple[str, ...] = ("backbone",)) -> pd.Series:
    """The frozen-backbone study's goodness factor of each cell: its test accuracy minus the
    lowest test accuracy on its line (the cells sharing its dataset and backbone; one dataset
    per experiment here)."""
    acc = rank["test_accuracy"].astype(float)
    return acc - acc.groupby([rank[c] for c in line]).transform("min")


def impact_table(rank: pd.DataFrame) -> dict[str, pd.Series]:
    """Per factor (transform, reduction, classifier, backbone): the mean goodness factor of the
    cells at each of its values, for factors with more than one value in the grid."""
    g = goodness(rank)
    return {
        f: g.groupby(rank[f]).mean().sort_values(ascending=False)
        for f in FACTORS
        if rank[f].nunique() > 1
    }


def impact_section(rank: pd.DataFrame) -> str:
    """The four impact plots of the frozen-backbone study (one per factor that varies)."""
    from sidflow.report.plots import bars_svg

    if "test_accuracy" not in rank or len(rank) < 2:
        return ""
    plots = [f"<figure>{bars_svg(v, f'impact of the {f}', 'mean goodness factor')}</figure>"
             for f, v in impact_table(rank).items()]  # fmt: skip
    if not plots:
        return ""
    return ("<h3>Impact analysis (goodness factor)</h3><p>Goodness factor of a cell = its test accuracy minus the "
            "lowest test accuracy among the cells of its backbone; bars: its mean over the cells at each value "
            f'of a factor.</p><div class="figs">{"".join(plots)}</div>')  # fmt: skip
