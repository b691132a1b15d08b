"""Report section of the probe grid: ranked cells and the cross-generator heatmap.

Built only from ``results/<experiment>/probe/ranking.csv`` and ``cross.csv``.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from sidflow.report.caveats import is_small, label_counts, mark, row_classes, span
from sidflow.report.context import DEFAULT_MIN_CLASS_COUNT
from sidflow.report.format import num, table
from sidflow.report.plots import heatmap_svg
from sidflow.tables import MEAN, POOLED

TOP = 25


def probe_section(
    ranking_csv: str | Path,
    cross_csv: str | Path,
    cross_best_csv: str | Path | None = None,
    metrics: pd.DataFrame | None = None,
    min_count: int = DEFAULT_MIN_CLASS_COUNT,
) -> str:
    """The ranked cells, the impact plots, the cross-generator matrix and each backbone's best
    cell. ``metrics``: the cells' metrics table (``probe/metrics.parquet``), whose counts give
    the test images behind every per-generator column (a row of counts under the header,
    ``⚠`` under fewer than ``min_count`` of a class)."""
    rank = pd.read_csv(ranking_csv)
    cols = ["rank", "backbone", "reduction", "classifier", "transform", "val_ap", "test_ap", "test_auc",
            "test_accuracy", "train_accuracy"] + [c for c in rank.columns if c.startswith("ap[")]  # fmt: skip
    cols = [c for c in cols if c in rank]
    counts = column_counts(metrics, min_count)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    if counts:
        n = [
            counts.get(c.removeprefix("ap[").removesuffix("]") if c.startswith("ap[") else c, "")
            for c in cols
        ]
        head += '</tr><tr class="counts">' + "".join(f"<td>{html.escape(v)}</td>" for v in n)  # fmt: skip
    body = "".join(
        "<tr>" + "".join(f"<td>{num(r[c])}</td>" for c in cols) + "</tr>"
        for _, r in rank.head(TOP).iterrows()
    )
    parts = [
        "<h2>Probe grid: frozen backbones + classical classifiers</h2>",
        f"<p>{len(rank)} cells (backbone, reduction, classifier, train-time transform) on cached "
        "features, ranked by <b>validation</b> AP (pooled, clean); test columns are pooled test AP/AUC/accuracy "
        "at the validation threshold, ap[generator] the clean test AP per generator and ap[transform] the pooled "
        f"test AP under each test-time transform. Top {min(TOP, len(rank))} shown; all in ranking.csv."
        + (
            " The row under the header counts each column's test images (fakes/reals)."
            if counts
            else ""
        )
        + "</p>",
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
        parts.append(cross_counts(cross, metrics, min_count))
    if cross_best_csv:
        parts.append(cross_best_section(pd.read_csv(cross_best_csv)))
    return "".join(parts)


def column_counts(metrics: pd.DataFrame | None, min_count: int) -> dict[str, str]:
    """The ranking table's count row: ``fakes/reals`` (``⚠`` when too few) of each test
    generator (``dataset/generator``), of the pooled clean test set (``test_ap``, ``test_auc``,
    ``test_accuracy``) and of each test-time transform's pooled set; {} without metrics."""
    if metrics is None or metrics.empty or "n_real" not in metrics:
        return {}
    small = is_small(metrics, min_count)
    out = {}
    for (dataset, generator, perturbation), g in metrics.groupby(
        ["dataset", "generator", "perturbation"], sort=False
    ):
        if generator == MEAN or (generator != POOLED and perturbation != "none"):
            continue
        text = mark(f"{span(g['n_fake'])}/{span(g['n_real'])}", bool(small[g.index].any()))
        if generator != POOLED:
            out[f"{dataset}/{generator}"] = text
        elif perturbation == "none":
            out |= dict.fromkeys(("test_ap", "test_auc", "test_accuracy"), text)
        else:
            out[perturbation] = text
    return out


def cross_counts(cross: pd.DataFrame, metrics: pd.DataFrame | None, min_count: int) -> str:
    """The test images behind each column of the cross-generator matrices: ``n_test`` from
    ``cross.csv``, its fakes and reals from the cells' metrics (same test split, same reals);
    rows with fewer than ``min_count`` of a class marked."""
    if "n_test" not in cross:
        return ""
    rows = cross.groupby("test", sort=True)["n_test"].first().rename("n_test").reset_index()
    by_key = pd.DataFrame(columns=["n_real", "n_fake", "small"])
    if metrics is not None and not metrics.empty and "n_real" in metrics:
        clean = metrics[
            (metrics["perturbation"] == "none") & ~metrics["generator"].isin([MEAN, POOLED])
        ]
        by_key = label_counts(clean, clean["dataset"] + "/" + clean["generator"], min_count)
    c = by_key.reindex(rows["test"])
    if c["n_real"].notna().any():  # the split is known: judge each class
        small = c["small"].fillna(False).astype(bool).to_numpy()
    else:  # fewer than twice the minimum in all: one class must be under it
        small = (rows["n_test"] < 2 * min_count).to_numpy()
    rows = rows.assign(n_real=c["n_real"].to_numpy(), n_fake=c["n_fake"].to_numpy())
    rows["test"] = [mark(t, f) for t, f in zip(rows["test"], small, strict=True)]
    return "<p>Test images behind each column (the same in every matrix):</p>" + table(
        rows.rename(columns={"test": "tested on"}), left=("tested on",), row_class=row_classes(small)
    )  # fmt: skip


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
