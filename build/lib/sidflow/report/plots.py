"""Figures for the report as inline SVG (matplotlib, Agg backend: no display, no network).

Every function takes the tidy tables the evaluate step wrote and returns an ``<svg>``
string that is embedded in the page as is, so the report opens from disk anywhere.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from sidflow.report.format import num


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE


def _figure(width: float = 4.2, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9})
    return plt.subplots(figsize=(width, height))


def curve_svg(points: pd.DataFrame, x: str, y: str, title: str, diagonal: bool = False) -> str:
    """One line per detector (ROC: fpr/tpr, PR: recall/precision, calibration)."""
    fig, ax = _figure()
    for detector, g in points.groupby("detector", sort=True):
        ax.plot(g[x], g[y], label=detector, lw=1.4, marker="o" if len(g) < 15 else None, ms=3)
    if diagonal:
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(
        xlabel=x.replace("_", " "),
        ylabel=y.replace("_", " "),
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _svg(fig)


def confusion_svg(tn: int, fp: int, fn: int, tp: int, title: str) -> str:
    fig, ax = _figure(2.4, 2.2)
    m = np.array([[tn, fp], [fn, tp]])
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(
            j,
            i,
            num(int(v)),
            ha="center",
            va="center",
            color="white" if v > m.max() / 2 else "black",
        )
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["real", "fake"], yticklabels=["real", "fake"],
           xlabel="predicted", ylabel="true", title=title)  # fmt: skip
    return _svg(fig)


def bars_svg(values: pd.Series, title: str, xlabel: str) -> str:
    """Horizontal bars (e.g. RINE's block importances, feature importances)."""
    fig, ax = _figure(4.2, max(1.6, 0.28 * len(values) + 0.8))
    ax.barh([str(i) for i in values.index], values.to_numpy())
    ax.set(xlabel=xlabel, title=title)
    ax.invert_yaxis()
    return _svg(fig)


def heatmap_svg(table: pd.DataFrame, title: str, digits: int = 2) -> str:
    fig, ax = _figure(1.2 + 0.7 * table.shape[1], 1.0 + 0.45 * table.shape[0])
    ax.imshow(table.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(table.to_numpy(dtype=float)):
        if not np.isnan(v):
            ax.text(
                j,
                i,
                num(v, digits),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v < 0.6 else "black",
            )
    ax.set(xticks=range(table.shape[1]), yticks=range(table.shape[0]), title=title)
    ax.set_xticklabels([str(c) for c in table.columns], rotation=45, ha="right")
    ax.set_yticklabels([str(i) for i in table.index])
    return _svg(fig)
