"""Report step: one self-contained HTML page per experiment (no network, opens from disk).

Reads only the metrics table, the step summaries (preprocess, label), the model
cards and the config. Every number on the page comes from those files.
"""

from __future__ import annotations

import html
import json
import subprocess
from pathlib import Path

import pandas as pd
import yaml

import sidflow
from sidflow.io import atomic_path, read_json
from sidflow.report.probe_section import probe_section
from sidflow.report.sections import audit_section, gradcam_section

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5rem 1rem}
.id{color:#555;font-style:italic}.figs{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0}
figcaption{font-size:.75rem;color:#555}.verdict{background:#eef6ff;border-left:4px solid #3b82f6;padding:.5rem 1rem}pre{background:#f6f8fa;padding:1rem;overflow:auto;font-size:.8rem}
"""


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(df: pd.DataFrame, left: tuple[str, ...] = ()) -> str:
    head = "".join(
        f'<th class="{"l" if c in left else ""}">{html.escape(str(c))}</th>' for c in df.columns
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"l" if c in left else ""}">{_fmt(v)}</td>'
            for c, v in zip(df.columns, row, strict=True)
        )
        + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def code_version() -> str:
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return f"sidflow {sidflow.__version__} ({rev.stdout.strip() or 'no git'})"
    except (OSError, subprocess.SubprocessError):
        return f"sidflow {sidflow.__version__}"


def per_generator_table(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows: generators (pooled last); columns: detectors; cells: ``metric``."""
    m = metrics[metrics["perturbation"] == "none"].copy()
    m["generator "] = (
        m["dataset"]
        + "/"
        + m["generator"]
        + m["in_distribution"].map({True: " (train)", False: ""})
    )
    wide = m.pivot_table(
        index="generator ", columns="detector", values=metric, aggfunc="first", sort=False
    )
    order = [g for g in wide.index if not g.startswith("all/")] + [
        g for g in wide.index if g.startswith("all/")
    ]
    return wide.loc[order].reset_index()


def _ci(lo, hi) -> str:
    return "–" if lo is None or pd.isna(lo) else f"[{lo:.3f}, {hi:.3f}]"


def _summary_table(pooled: pd.DataFrame) -> str:
    rows = [{"detector": r["detector"], "accuracy": r["accuracy"],
             "accuracy 95% CI": _ci(r.get("accuracy_ci_low"), r.get("accuracy_ci_high")), "AP": r["ap"],
             "AP 95% CI": _ci(r.get("ap_ci_low"), r.get("ap_ci_high")), "AUC": r["auc"],
             "TPR@1%FPR": r.get("tpr_at_fpr_1"), "ECE": r.get("ece")}
            for r in pooled.sort_values("ap", ascending=False).to_dict("records")]  # fmt: skip
    return "<h3>Pooled test metrics (95% bootstrap intervals)</h3>" + _table(
        pd.DataFrame(rows), left=("detector",)
    )


def ablation_section(comp: pd.DataFrame) -> str:
    """KD ablation: did distillation help over the no-KD baseline? (paired bootstrap)"""
    out = ["<h2>Distillation ablation</h2>"]
    if comp.empty:
        return (
            "".join(out) + "<p>No KD student / no-KD baseline pair was run in this experiment.</p>"
        )
    pooled = comp[comp["generator"] == "all"]
    for r in pooled.to_dict("records"):
        out.append(
            f'<p class="verdict"><b>{html.escape(r["detector"])}</b> vs <b>{html.escape(r["baseline"])}</b> '
            f"(pooled test, same {int(r['n'])} images): AP difference {r['ap_diff']:+.4f} "
            f"{_ci(r['ap_diff_low'], r['ap_diff_high'])}, accuracy difference {r['accuracy_diff']:+.4f} "
            f"{_ci(r['accuracy_diff_low'], r['accuracy_diff_high'])}: distillation "
            f"<b>{html.escape(r['verdict'])}</b>.</p>"
        )
    show = comp.assign(ap_ci=[_ci(a, b) for a, b in zip(comp["ap_diff_low"], comp["ap_diff_high"], strict=True)],
                       accuracy_ci=[_ci(a, b) for a, b in zip(comp["accuracy_diff_low"], comp["accuracy_diff_high"],
                                                              strict=True)])  # fmt: skip
    cols = ["detector", "baseline", "dataset", "generator", "ap_diff", "ap_ci", "accuracy_diff", "accuracy_ci",
            "n", "verdict"]  # fmt: skip
    out.append(_table(show[cols], left=("detector", "baseline", "dataset", "generator", "verdict")))
    return "".join(out)


def curves_section(plots: Path, metrics: pd.DataFrame) -> str:
    from sidflow.report.plots import confusion_svg, curve_svg

    out = ['<h2>Curves (pooled test split)</h2><div class="figs">']
    for name, x, y, title, diag in (("roc", "fpr", "tpr", "ROC", True), ("pr", "recall", "precision", "Precision-recall", False),
                                    ("calibration", "mean_p_fake", "fake_rate", "Calibration (reliability)", True)):  # fmt: skip
        path = plots / f"{name}.csv"
        if path.exists() and path.stat().st_size > 1:
            df = pd.read_csv(path)
            if len(df):
                out.append(f'<figure id="fig-{name}">{curve_svg(df, x, y, title, diag)}</figure>')
    out.append(
        '</div><h3>Confusion matrices (pooled test, validation threshold)</h3><div class="figs">'
    )
    pooled = metrics[(metrics["generator"] == "all") & (metrics["perturbation"] == "none")]
    for r in pooled.to_dict("records"):
        if r.get("tp") is not None and not pd.isna(r.get("tp")):
            svg = confusion_svg(r["tn"], r["fp"], r["fn"], r["tp"], r["detector"])
            out.append(f"<figure>{svg}</figure>")
    return "".join(out) + "</div>"


def robustness_section(metrics: pd.DataFrame) -> str:
    """AP and accuracy per generator and test-time perturbation, for each detector that has them."""
    perturbed = metrics[metrics["perturbation"] != "none"]
    if perturbed.empty:
        return ""
    out = ["<h2>Robustness to test-time perturbations</h2>",
           "<p>Test images re-encoded, blurred or resized after preprocessing; thresholds stay those calibrated "
           "on clean validation data.</p>"]  # fmt: skip
    for detector in sorted(perturbed["detector"].unique()):
        m = metrics[metrics["detector"] == detector].copy()
        m["generator "] = m["dataset"] + "/" + m["generator"]
        for metric in ("ap", "accuracy"):
            wide = m.pivot_table(
                index="generator ", columns="perturbation", values=metric, aggfunc="first"
            )
            cols = ["none"] + [c for c in wide.columns if c != "none"]
            wide = wide[[c for c in cols if c in wide.columns]].reset_index()
            out.append(
                f"<h3>{html.escape(detector)}: {metric.upper() if metric == 'ap' else metric}</h3>"
            )
            out.append(_table(wide, left=("generator ",)))
    return "".join(out)


def rine_section(model_cards: dict[str, str]) -> str:
    """Each RINE detector's learned block importances (which CLIP blocks it reads)."""
    from sidflow.report.plots import bars_svg

    out = []
    for name, path in sorted(model_cards.items()):
        card = read_json(path)
        if "block_importance" not in card:
            continue
        imp = pd.Series(
            card["block_importance"],
            index=[f"block {i + 1}" for i in range(len(card["block_importance"]))],
        )
        bb = card.get("backbone") or {}
        out.append(f"<h3>{html.escape(name)}</h3>")
        out.append(
            f"<p>Backbone {html.escape(str(bb.get('checkpoint', '?')))} ({bb.get('n_blocks', '?')} blocks of "
            f"{bb.get('dim', '?')} features); best epoch {card['best_epoch']}, validation AP {_fmt(card['val_ap'])}. "
            "Importance of a block = its softmax weight in the Trainable Importance Estimator, averaged over "
            "features (sums to 1; uniform would be "
            f"{_fmt(1 / len(imp))}).</p>"
        )
        if bb.get("checkpoint") == "tiny":
            out.append('<p class="note">The tiny backbone is randomly initialised (no pretrained CLIP weights offline): '
                       "its importances describe random features, not CLIP's.</p>")  # fmt: skip
        out.append(bars_svg(imp, f"{name}: block importance", "importance"))
    return ("<h2>RINE: which encoder blocks matter</h2>" + "".join(out)) if out else ""


def build_report(
    metrics_path: str | Path,
    preprocess_summaries: dict[str, str],
    manifest_summaries: dict[str, str],
    quarantine_files: dict[str, str],
    model_cards: dict[str, str],
    config: dict,
    out_html: str | Path,
    experiment: str,
    dataset_notes: dict[str, str] | None = None,
    comparisons_path: str | Path | None = None,
    plots_dir: str | Path | None = None,
    audit_path: str | Path | None = None,
    gradcam_dirs: list[str] | None = None,
    probe_files: list[str] | None = None,
) -> None:
    metrics = pd.read_parquet(metrics_path)
    parts = [f"<h1>sidflow report: {html.escape(experiment)}</h1>"]
    for name, note in (dataset_notes or {}).items():
        parts.append(f'<p class="note"><b>{html.escape(name)}</b>: {html.escape(note)}</p>')

    pooled = metrics[(metrics["generator"] == "all") & (metrics["perturbation"] == "none")
                     & ~metrics["detector"].str.startswith("audit-")]  # fmt: skip
    if not pooled.empty:
        best = pooled.sort_values("ap", ascending=False).iloc[0]
        parts.append(
            f"<h2>Summary</h2><p>Best pooled detector: <b>{html.escape(best['detector'])}</b>, "
            f"AP {_fmt(best['ap'])}, AUC {_fmt(best['auc'])}, accuracy {_fmt(best['accuracy'])} at its "
            f"validation-calibrated threshold {_fmt(best['threshold'])}. Generators marked (train) were seen in "
            "training (in-distribution); the others measure generalisation.</p>"
        )
        parts.append(_summary_table(pooled))
    if comparisons_path:
        parts.append(ablation_section(pd.read_csv(comparisons_path)))
    if plots_dir:
        parts.append(curves_section(Path(plots_dir), metrics))
    parts.append("<h2>Per-generator metrics (test split)</h2>")
    parts.append('<p>Each fake generator is scored against the real test images of its dataset; '
                 'real rows show real accuracy only. Thresholds are chosen on the validation split of the training generators.</p>')  # fmt: skip
    for metric, label in [("ap", "Average precision"), ("auc", "ROC-AUC"), ("accuracy", "Accuracy at the validation threshold"),
                          ("accuracy_at_0.5", "Accuracy at 0.5"), ("fake_accuracy", "Fake accuracy"),
                          ("tpr_at_fpr_1", "TPR at 1% FPR"), ("object_accuracy", "Object-class accuracy (object head)")]:  # fmt: skip
        if metric not in metrics or metrics[metric].isna().all():
            continue
        parts.append(
            f"<h3>{label}</h3>" + _table(per_generator_table(metrics, metric), left=("generator ",))
        )
    cols = ["detector", "dataset", "generator", "in_distribution", "n_real", "n_fake", "threshold", "accuracy",
            "accuracy_at_0.5", "real_accuracy", "fake_accuracy", "f1", "ap", "auc", "tpr_at_fpr_1", "tpr_at_fpr_5",
            "brier", "ece", "object_accuracy"]  # fmt: skip
    cols = [c for c in cols if c in metrics]
    parts.append(
        "<h3>All metrics</h3>" + _table(metrics[cols], left=("detector", "dataset", "generator"))
    )

    parts.append(robustness_section(metrics))
    parts.append(audit_section(audit_path, metrics))
    parts.append(gradcam_section(gradcam_dirs))
    parts.append(rine_section(model_cards))
    if probe_files:
        parts.append(probe_section(*probe_files))
    parts.append("<h2>Dataset card</h2>")
    rows = []
    for key, path in sorted(preprocess_summaries.items()):
        pre = read_json(path)
        man = read_json(manifest_summaries[key])
        rows.append({"generator": key, "inputs": pre["inputs"], "written": pre["written"],
                     "quarantined": pre["quarantined"], "exact duplicates": man["exact_duplicates"],
                     "cross-split duplicates": man["cross_split_duplicates"], **man["splits"]})  # fmt: skip
    parts.append(_table(pd.DataFrame(rows), left=("generator",)))
    qrows = [pd.read_parquet(p).assign(generator=k) for k, p in sorted(quarantine_files.items())]
    q = pd.concat(qrows, ignore_index=True) if qrows else pd.DataFrame()
    if len(q):
        parts.append(
            "<h3>Quarantined inputs</h3>"
            + _table(
                q[["generator", "source_path", "reason", "detail"]].head(200),
                left=("generator", "source_path", "reason", "detail"),
            )
        )
    else:
        parts.append("<p>No input was quarantined.</p>")

    parts.append("<h2>Models</h2>")
    for name, path in sorted(model_cards.items()):
        card = read_json(path)
        hist = pd.json_normalize(card.get("history", []))
        parts.append(f"<h3>{html.escape(name)}</h3>")
        facts = {
            k: card[k]
            for k in (
                "threshold",
                "best_epoch",
                "val_ap",
                "train_images",
                "checkpoint_hash",
                "teachers",
            )
            if k in card
        }
        parts.append(f"<pre>{html.escape(json.dumps(facts, indent=1))}</pre>")
        if len(hist):
            parts.append(_table(hist))
    parts.append("<h2>Provenance</h2>")
    parts.append(f"<p>Code: {html.escape(code_version())}</p>")
    parts.append(f"<pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>")
    page = f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>sidflow: {html.escape(experiment)}</title><style>{CSS}</style></head><body>{"".join(parts)}</body></html>'
    with atomic_path(out_html, suffix=".html") as tmp:
        tmp.write_text(page)
