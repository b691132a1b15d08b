"""Small-data caveats: the rows of the report that rest on too few test images, and the
detectors whose validation-calibrated threshold is degenerate.

An AP on 5 fakes against 40 reals moves by tenths with one image; an accuracy "at the
validation threshold" means little when that threshold calls every image one class. The
report marks such rows where they appear (``⚠`` and the CSS class ``small``), says so in
the summary, and lists both in a warning box at the top of the page (:func:`warnings_section`).

    is_small(metrics, 30)                 # per row: fewer than 30 images of a class it needs?
    degenerate_threshold(pooled_row)      # "it calls every pooled test image fake" or None
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from sidflow.report.context import ReportData
from sidflow.report.format import is_missing, num
from sidflow.tables import MEAN, POOLED

MARK = "⚠"
SMALL = "small"  # CSS class of a row resting on too few images
EDGE = 1e-6  # a threshold this close to 0 or 1 sits at the edge of the score range
LISTED = 10  # degenerate probe cells named in the warning box (the others are counted)


def is_small(metrics: pd.DataFrame, min_count: int) -> pd.Series:
    """Per row of a metrics table: does it rest on fewer than ``min_count`` test images of a
    class it needs? A real row needs reals only (it shows real accuracy); a fake generator's
    row and the pooled row need both classes; the mean over generators is small when its
    reals are or when any generator it averages is (it weights each once, whatever its size).
    All False for a table without counts."""
    if metrics.empty or not {"n_real", "n_fake"} <= set(metrics.columns):
        return pd.Series(False, index=metrics.index, dtype=bool)
    n_real = pd.to_numeric(metrics["n_real"], errors="coerce").fillna(0).to_numpy()
    n_fake = pd.to_numeric(metrics["n_fake"], errors="coerce").fillna(0).to_numpy()
    is_real = np.zeros(len(metrics), dtype=bool)
    if "is_real" in metrics:
        is_real = metrics["is_real"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    generator = metrics["generator"].to_numpy()
    mean = generator == MEAN
    small = (n_real < min_count) | (~is_real & (n_fake < min_count))
    member = small & ~mean & ~is_real & (generator != POOLED)
    keys = list(zip(metrics["detector"], metrics["perturbation"], strict=True))
    flagged = {k for k, m in zip(keys, member, strict=True) if m}
    averages_small = np.array([k in flagged for k in keys], dtype=bool)
    small = np.where(mean, (n_real < min_count) | averages_small, small)
    return pd.Series(small, index=metrics.index, dtype=bool)


def mark(label, small: bool) -> str:
    """A row label with the small-data marker when ``small``."""
    return f"{label} {MARK}" if small else str(label)


def row_classes(flags: Iterable[bool]) -> list[str]:
    """The CSS class of each table row: ``small`` for a flagged one."""
    return [SMALL if f else "" for f in flags]


def span(values: pd.Series):
    """One count, or ``lo–hi`` when the rows behind a label differ (None without counts)."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return None
    lo, hi = int(v.min()), int(v.max())
    return lo if lo == hi else f"{lo}–{hi}"


def label_counts(metrics: pd.DataFrame, labels: pd.Series, min_count: int) -> pd.DataFrame:
    """Per row label of a pivot (``labels``: one per row of ``metrics``): ``n_real``,
    ``n_fake`` (``lo–hi`` when its rows differ, e.g. detectors scored on different images)
    and ``small`` (any of its rows rests on too few images). Indexed by label."""
    have = {"n_real", "n_fake"} <= set(metrics.columns)
    df = pd.DataFrame({
        "label": np.asarray(labels),
        "n_real": metrics["n_real"].to_numpy() if have else None,
        "n_fake": metrics["n_fake"].to_numpy() if have else None,
        "small": is_small(metrics, min_count).to_numpy(),
    })  # fmt: skip
    return df.groupby("label", sort=False).agg(
        n_real=("n_real", span), n_fake=("n_fake", span), small=("small", "any")
    )


def degenerate_threshold(row: Mapping) -> str | None:
    """Why a detector's validation-calibrated threshold is degenerate, judged from its pooled
    clean metrics row (the metrics table records the threshold and the test confusion
    counts, not the validation scores), or None when it is not (or it has no threshold).

    Degenerate: within :data:`EDGE` of 0 or 1, the edge of the p_fake range (the calibration
    puts a threshold there only when no cut separates the validation classes), or calling
    every pooled test image one class (then its accuracy is the class balance)."""
    t = row.get("threshold")
    if is_missing(t):
        return None
    why = []
    if float(t) <= EDGE or float(t) >= 1 - EDGE:
        why.append(f"it sits at {num(t)}, the edge of the [0, 1] score range")
    counts = [row.get(k) for k in ("tp", "fp", "tn", "fn")]
    if not any(is_missing(c) for c in counts):
        tp, fp, tn, fn = (int(c) for c in counts)
        if tp + fp == 0 and tn + fn:
            why.append("it calls every pooled test image real")
        elif tn + fn == 0 and tp + fp:
            why.append("it calls every pooled test image fake")
    return " and ".join(why) or None


def degenerate_thresholds(pooled: pd.DataFrame) -> dict[str, str]:
    """Detector -> why its threshold is degenerate, over pooled clean metrics rows."""
    out = {}
    for row in pooled.to_dict("records"):
        why = degenerate_threshold(row)
        if why:
            out[row["detector"]] = why
    return out


def small_rows(r: ReportData) -> pd.DataFrame:
    """The distinct rows (dataset, generator and counts) of the report's metrics tables, the
    probe cells' included, that rest on fewer than ``r.min_class_count`` images of a class:
    fake generators first, then real ones, the mean and the pooled row."""
    cols = ["dataset", "generator", "is_real", "n_real", "n_fake"]
    frames = [m[is_small(m, r.min_class_count)] for m in (r.metrics, r.probe_metrics)
              if m is not None and not m.empty and {"n_real", "n_fake"} <= set(m.columns)]  # fmt: skip
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=cols)
    rows = pd.concat(frames, ignore_index=True).drop_duplicates(cols[:2] + cols[3:])
    order = rows["generator"].map({MEAN: 2, POOLED: 3}).fillna(rows["is_real"].astype(int))
    return rows.assign(_order=order).sort_values(["_order", "dataset", "generator"])[cols]


def _describe(row: Mapping) -> str:
    """One small row in words."""
    n_real, n_fake = num(row["n_real"]), num(row["n_fake"])
    if row["generator"] == MEAN:
        return ("mean over generators: it weights each generator once, so it is as noisy as "
                "its smallest one")  # fmt: skip
    if row["generator"] == POOLED:
        return f"pooled (all test images): {n_fake} fakes, {n_real} reals"
    key = html.escape(f"{row['dataset']}/{row['generator']}")
    if bool(row["is_real"]):
        return f"{key}: {n_real} real test images"
    return f"{key}: {n_fake} fakes against {n_real} reals"


def degenerate_items(r: ReportData) -> list[str]:
    """The warning box's lines on degenerate thresholds: every detector's, then the probe
    cells' by test AP (the first :data:`LISTED` named, the others counted)."""
    items = [f"<li>degenerate threshold: <b>{html.escape(d)}</b>: {html.escape(why)}</li>"
             for d, why in degenerate_thresholds(r.pooled()).items()]  # fmt: skip
    cells = r.probe_pooled()
    cells = degenerate_thresholds(cells.sort_values("ap", ascending=False) if len(cells) else cells)
    for d, why in list(cells.items())[:LISTED]:
        items.append(f"<li>degenerate threshold: <b>{html.escape(d)}</b>: {html.escape(why)}</li>")
    if len(cells) > LISTED:
        items.append(
            f"<li>… and {len(cells) - LISTED} more probe cells with a degenerate threshold</li>"
        )
    return items


def warnings_section(r: ReportData) -> str:
    """The warning box at the top of the page: the rows resting on too few images and the
    degenerate thresholds (``""`` when there is neither)."""
    small = small_rows(r)
    degenerate = degenerate_items(r)
    if small.empty and not degenerate:
        return ""
    out = [f'<div class="warn" id="warnings"><p><b>{MARK} Read with care.</b></p>']
    if not small.empty:
        lines = dict.fromkeys(_describe(row) for row in small.to_dict("records"))
        items = "".join(f"<li>{line}</li>" for line in lines)
        out.append(
            f"<p>These rows rest on fewer than {num(r.min_class_count)} test images of a class "
            "(<code>report.min_class_count</code>); one image moves their AP, AUC and accuracies "
            f"by a lot and their intervals are wide. Every table marks them {MARK}.</p><ul>{items}</ul>"
        )
    if degenerate:
        out.append(
            "<p>Degenerate validation-calibrated thresholds (at the edge of the score range, or "
            "calling every test image one class): accuracy, F1 and real/fake accuracy at such a "
            "threshold measure the class balance, not the detector (AP and AUC do not depend on "
            f"it).</p><ul>{''.join(degenerate)}</ul>"
        )
    return "".join(out) + "</div>"
