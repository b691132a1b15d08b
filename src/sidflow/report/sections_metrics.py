"""Report sections built from the evaluate step's tables: summary, distillation ablation,
curves, per-generator metrics and robustness to test-time perturbations.

Each section takes the :class:`~sidflow.report.context.ReportData` and returns an HTML
fragment, or ``""`` when it has nothing to show.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from sidflow.report.caveats import (
    MARK,
    degenerate_thresholds,
    is_small,
    label_counts,
    mark,
    row_classes,
    small_rows,
)
from sidflow.report.context import DEFAULT_MIN_CLASS_COUNT, ReportData
from sidflow.report.format import ci, num, table
from sidflow.tables import MEAN, POOLED

# (metric column, heading) of the per-generator tables, in page order
PER_GENERATOR = [("ap", "Average precision"), ("auc", "ROC-AUC"), ("accuracy", "Accuracy at the validation threshold"),
                 ("accuracy_at_0.5", "Accuracy at 0.5"), ("fake_accuracy", "Fake accuracy"),
                 ("tpr_at_fpr_1", "TPR at 1% FPR"), ("object_accuracy", "Object-class accuracy (object head)")]  # fmt: skip
ALL_METRICS = ["detector", "dataset", "generator", "in_distribution", "n_real", "n_fake", "n_generators",
               "threshold", "accuracy",
               "accuracy_at_0.5", "real_accuracy", "fake_accuracy", "f1", "ap", "auc", "tpr_at_fpr_1", "tpr_at_fpr_5",
               "brier", "ece", "object_accuracy", "other"]  # fmt: skip
# (file key, x, y, title, diagonal) of the curve figures
CURVES = [("roc", "fpr", "tpr", "ROC", True), ("pr", "recall", "precision", "Precision-recall", False),
          ("calibration", "mean_p_fake", "fake_rate", "Calibration (reliability)", True)]  # fmt: skip


def per_generator_table(
    metrics: pd.DataFrame, metric: str, min_count: int = DEFAULT_MIN_CLASS_COUNT
) -> pd.DataFrame:
    """Rows: generators, then the mean over generators and the pooled row; columns: the test
    images it rests on (``n_real``, ``n_fake``), then detectors; cells: ``metric``. A row
    resting on fewer than ``min_count`` images of a class it needs ends in ``⚠``."""
    m = metrics[metrics["perturbation"] == "none"].copy()
    label = (
        m["dataset"]
        + "/"
        + m["generator"]
        + m["in_distribution"].map({True: " (train)", False: ""})
    )
    label[m["dataset"] == MEAN] = "mean over generators"
    label[m["dataset"] == POOLED] = "pooled (all test images)"
    m["generator "] = label
    wide = m.pivot_table(
        index="generator ", columns="detector", values=metric, aggfunc="first", sort=False
    )
    last = ["mean over generators", "pooled (all test images)"]
    order = [g for g in wide.index if g not in last] + [g for g in last if g in wide.index]
    counts = label_counts(m, label, min_count).loc[order]
    wide = wide.loc[order]
    wide.insert(0, "n_fake", counts["n_fake"].to_numpy())
    wide.insert(0, "n_real", counts["n_real"].to_numpy())
    wide.index = [mark(g, s) for g, s in zip(order, counts["small"], strict=True)]
    wide.index.name, wide.columns.name = "generator ", None
    return wide.reset_index()


def _marked(df: pd.DataFrame, col: str = "generator ") -> list[str]:
    """The row classes of a table whose ``col`` labels carry the small-data marker."""
    return row_classes(str(v).endswith(MARK) for v in df[col])


def summary_section(r: ReportData) -> str:
    """The best pooled detector (the probe-grid cells compete too) and every ranked
    detector's pooled test metrics, with the best probe cell; counts, thresholds and the
    small-data and degenerate-threshold caveats beside them."""
    ranked = r.ranked(r.pooled())
    cells = r.probe_pooled()
    best_cell = cells.sort_values("ap", ascending=False).iloc[:1] if len(cells) else cells
    frames = [f for f in (ranked, best_cell) if len(f)]
    pooled = pd.concat(frames, ignore_index=True) if frames else ranked
    if pooled.empty:
        return ""
    pooled = pooled.sort_values("ap", ascending=False, kind="stable")
    best = pooled.iloc[0]
    degenerate = degenerate_thresholds(pooled)
    small = dict(zip(pooled["detector"], is_small(pooled, r.min_class_count), strict=True))
    rows = [{"detector": mark(d["detector"], small[d["detector"]]), "n_real": d.get("n_real"),
             "n_fake": d.get("n_fake"), "threshold": f"{num(d['threshold'])}{' ' + MARK if d['detector'] in degenerate else ''}",
             "accuracy": d["accuracy"], "accuracy 95% CI": ci(d.get("accuracy_ci_low"), d.get("accuracy_ci_high")),
             "AP": d["ap"], "AP 95% CI": ci(d.get("ap_ci_low"), d.get("ap_ci_high")), "AUC": d["auc"],
             "TPR@1%FPR": d.get("tpr_at_fpr_1"), "ECE": d.get("ece")}
            for d in pooled.to_dict("records")]  # fmt: skip
    rows = pd.DataFrame(rows)
    notes = []
    if best["detector"] in set(cells["detector"]):
        notes.append(f"It is a probe-grid cell, the best of {num(len(cells))} by test AP: picking among many "
                     "cells on the test split flatters the winner (the probe section ranks them by validation AP).")  # fmt: skip
    elif len(cells):
        notes.append(
            f"The probe grid's best cell by test AP (of {num(len(cells))}) is listed with the detectors."
        )
    if best["detector"] in degenerate:
        notes.append(f"{MARK} <b>Degenerate threshold</b>: {html.escape(degenerate[best['detector']])}; its "
                     "accuracy there measures the class balance, not the detector.")  # fmt: skip
    if small[best["detector"]]:
        notes.append(f"{MARK} Its pooled test set has only {num(best.get('n_fake'))} fakes and "
                     f"{num(best.get('n_real'))} reals.")  # fmt: skip
    others = [d for d in degenerate if d != best["detector"]]
    if others:
        notes.append(
            f"{MARK} Degenerate thresholds also: {html.escape(', '.join(others))} (marked {MARK})."
        )
    n_small = len(small_rows(r))
    if n_small:
        notes.append(f"{MARK} {num(n_small)} rows of the metrics tables rest on fewer than {num(r.min_class_count)} "
                     f"test images of a class (marked {MARK}; listed in the warning box above).")  # fmt: skip
    note = "".join(f'<p class="warn">{n}</p>' if MARK in n else f"<p>{n}</p>" for n in notes)
    return (
        f"<h2>Summary</h2><p>Best pooled detector: <b>{html.escape(best['detector'])}</b>, "
        f"AP {num(best['ap'])}, AUC {num(best['auc'])}, accuracy {num(best['accuracy'])} at its "
        f"validation-calibrated threshold {num(best['threshold'])}"
        f"{' (degenerate, ' + MARK + ' below)' if best['detector'] in degenerate else ''}. Generators marked (train) were seen in "
        "training (in-distribution); the others measure generalisation.</p>"
        + note
        + "<h3>Pooled test metrics (95% bootstrap intervals)</h3>"
        + table(rows, left=("detector",), row_class=_marked(rows, "detector"))
    )


def ablation_section(r: ReportData) -> str:
    """KD ablation: did distillation help over the no-KD baseline? (paired bootstrap)"""
    comp = r.comparisons
    if comp is None:
        return ""
    out = ["<h2>Distillation ablation</h2>"]
    if comp.empty:
        return out[0] + "<p>No KD student / no-KD baseline pair was run in this experiment.</p>"
    for d in comp[comp["generator"] == "all"].to_dict("records"):
        out.append(
            f'<p class="verdict"><b>{html.escape(d["detector"])}</b> vs <b>{html.escape(d["baseline"])}</b> '
            f"(pooled test, same {num(int(d['n']))} images): AP difference {num(d['ap_diff'], 4, sign=True)} "
            f"{ci(d['ap_diff_low'], d['ap_diff_high'])}, accuracy difference "
            f"{num(d['accuracy_diff'], 4, sign=True)} {ci(d['accuracy_diff_low'], d['accuracy_diff_high'])}: "
            f"distillation <b>{html.escape(d['verdict'])}</b>.</p>"
        )
    show = comp.assign(ap_ci=[ci(a, b) for a, b in zip(comp["ap_diff_low"], comp["ap_diff_high"], strict=True)],
                       accuracy_ci=[ci(a, b) for a, b in zip(comp["accuracy_diff_low"], comp["accuracy_diff_high"],
                                                             strict=True)])  # fmt: skip
    cols = ["detector", "baseline", "dataset", "generator", "ap_diff", "ap_ci", "accuracy_diff", "accuracy_ci",
            "n", "verdict"]  # fmt: skip
    out.append(table(show[cols], left=("detector", "baseline", "dataset", "generator", "verdict")))
    return "".join(out)


def curves_section(r: ReportData) -> str:
    """ROC, precision-recall and calibration curves; a confusion matrix per detector."""
    if not r.curves:
        return ""
    from sidflow.report.plots import confusion_svg, curve_svg

    out = ['<h2>Curves (pooled test split)</h2><div class="figs">']
    for name, x, y, title, diag in CURVES:
        path = Path(r.curves[name]) if name in r.curves else None
        if path and path.exists() and path.stat().st_size > 1:
            df = pd.read_csv(path)
            if len(df):
                out.append(f'<figure id="fig-{name}">{curve_svg(df, x, y, title, diag)}</figure>')
    out.append(
        '</div><h3>Confusion matrices (pooled test, validation threshold)</h3><div class="figs">'
    )
    for d in r.pooled().to_dict("records"):
        if _has_counts(d):
            svg = confusion_svg(d["tn"], d["fp"], d["fn"], d["tp"], d["detector"])
            out.append(f"<figure>{svg}</figure>")
    out.append("</div>")
    return "".join(out) + per_generator_confusions(r)


def _has_counts(row: dict) -> bool:
    return row.get("tp") is not None and not pd.isna(row.get("tp"))


def per_generator_confusions(r: ReportData) -> str:
    """Per detector (folded): a confusion matrix per fake generator against its reals."""
    from sidflow.report.plots import confusion_svg

    m = r.metrics[(r.metrics["perturbation"] == "none") & ~r.metrics["is_real"].astype(bool)]
    m = m[~m["generator"].isin([POOLED, MEAN])]
    out = []
    for detector, rows in m.groupby("detector", sort=False):
        figs = []
        for d in rows.to_dict("records"):
            if _has_counts(d):
                svg = confusion_svg(
                    d["tn"], d["fp"], d["fn"], d["tp"], f"{d['dataset']}/{d['generator']}"
                )
                figs.append(f"<figure>{svg}</figure>")
        if figs:
            out.append(f"<details><summary>{html.escape(str(detector))}</summary>"
                       f'<div class="figs">{"".join(figs)}</div></details>')  # fmt: skip
    if not out:
        return ""
    return (
        "<h3>Confusion matrices per generator (each fake generator against its reals)</h3>"
        + "".join(out)
    )


def per_generator_section(r: ReportData) -> str:
    """One table per metric: generators x detectors on the clean test split."""
    out = ["<h2>Per-generator metrics (test split)</h2>",
           "<p>Each fake generator is scored against the real test images of its dataset; "
           "real rows show real accuracy only. <i>Mean over generators</i> weights every fake generator "
           "once (the papers' average over subsets); <i>pooled</i> weights every image once. "
           "Thresholds are chosen on the validation split of the training generators. <code>n_real</code> and "
           "<code>n_fake</code> count the test images a row rests on (a range when detectors differ); "
           f"{MARK} marks a row with fewer than {num(r.min_class_count)} of a class it needs.</p>"]  # fmt: skip
    captions = r.of_kind("teacher-caption")
    if captions:
        out.append(f"<p>{', '.join(html.escape(c) for c in captions)}: the teacher's <i>generated caption</i> is "
                   "its verdict (accuracy, F1, real/fake accuracy; a caption naming neither class counts as "
                   "wrong and is counted in <code>other</code>). Its AP and AUC rank the class-caption likelihood, "
                   "the same score as the teacher's likelihood detector.</p>")  # fmt: skip
    for metric, label in PER_GENERATOR:
        if metric not in r.metrics or r.metrics[metric].isna().all():
            continue
        wide = per_generator_table(r.metrics, metric, r.min_class_count)
        out.append(f"<h3>{label}</h3>" + table(wide, left=("generator ",), row_class=_marked(wide)))
    return "".join(out)


def all_metrics_section(r: ReportData) -> str:
    """Every row of the metrics table."""
    cols = [c for c in ALL_METRICS if c in r.metrics]
    if not cols:
        return ""
    small = is_small(r.metrics, r.min_class_count)
    rows = r.metrics[cols].copy()
    if "generator" in rows:
        rows["generator"] = [mark(g, f) for g, f in zip(rows["generator"], small, strict=True)]
    return "<h3>All metrics</h3>" + table(
        rows, left=("detector", "dataset", "generator"), row_class=row_classes(small)
    )


def robustness_section(r: ReportData) -> str:
    """AP and accuracy per generator and test-time perturbation, for each detector that has them."""
    metrics = r.metrics
    perturbed = metrics[metrics["perturbation"] != "none"]
    if perturbed.empty:
        return ""
    out = ["<h2>Robustness to test-time perturbations</h2>",
           "<p>Test images re-encoded, blurred or resized after preprocessing; thresholds stay those calibrated "
           "on clean validation data.</p>"]  # fmt: skip
    for detector in sorted(perturbed["detector"].unique()):
        m = metrics[metrics["detector"] == detector].copy()
        m["generator "] = m["dataset"] + "/" + m["generator"]
        counts = label_counts(m, m["generator "], r.min_class_count)
        for metric in ("ap", "accuracy"):
            wide = m.pivot_table(
                index="generator ", columns="perturbation", values=metric, aggfunc="first"
            )
            cols = ["none"] + [c for c in wide.columns if c != "none"]
            wide = wide[[c for c in cols if c in wide.columns]]
            c = counts.loc[wide.index]
            wide.insert(0, "n_fake", c["n_fake"].to_numpy())
            wide.insert(0, "n_real", c["n_real"].to_numpy())
            wide.index = [mark(g, f) for g, f in zip(wide.index, c["small"], strict=True)]
            wide.index.name, wide.columns.name = "generator ", None
            wide = wide.reset_index()
            out.append(
                f"<h3>{html.escape(detector)}: {metric.upper() if metric == 'ap' else metric}</h3>"
            )
            out.append(table(wide, left=("generator ",), row_class=_marked(wide)))
    return "".join(out)


def attribution_section(r: ReportData) -> str:
    """Generator attribution (real + each training generator): per detector with an
    attribution head, its accuracy and the (N+1) x (N+1) confusion matrix on the clean test
    split (rows: the true source, normalised to 1; columns: the head's answer)."""
    path = Path(r.curves["attribution"]) if "attribution" in r.curves else None
    if not path or not path.exists() or path.stat().st_size <= 1:
        return ""
    counts = pd.read_csv(path)
    if counts.empty:
        return ""
    from sidflow.report.plots import heatmap_svg

    out = ["<h2>Generator attribution (test split)</h2>",
           "<p>Which generator made each image, by the detectors' attribution heads (real + every "
           "training generator; a generator they never saw can only be answered wrongly). Rows: the "
           "true source, each normalised to 1; columns: the answer; the count of each row is in its label.</p>"]  # fmt: skip
    pooled = r.pooled().set_index("detector")
    figs = []
    for detector, g in counts.groupby("detector", sort=False):
        m = g.pivot_table(index="true", columns="pred", values="n", aggfunc="sum", fill_value=0)
        classes = ["real"] + sorted((set(m.index) | set(m.columns)) - {"real"})
        m = m.reindex(index=classes, columns=classes, fill_value=0)
        n = m.sum(axis=1)
        frac = m.div(n.where(n > 0), axis=0)
        frac.index = [f"{c} ({int(k)})" for c, k in zip(frac.index, n, strict=True)]
        acc = (
            pooled["attribution_accuracy"].get(detector)
            if "attribution_accuracy" in pooled
            else None
        )
        title = f"{detector}: accuracy {num(acc)}"
        figs.append(f"<figure>{heatmap_svg(frac, title)}</figure>")
    out.append(f'<div class="figs">{"".join(figs)}</div>')
    return "".join(out)
