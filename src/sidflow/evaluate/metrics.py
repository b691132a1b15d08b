"""Metrics per generator and pooled, at a validation-calibrated threshold.

    table = evaluate_scores(scores, train_generators=["demo/real", "demo/ae-deconv"])

For each detector the threshold is calibrated on the *validation* split of its
training generators (never on test data). Each fake generator is then scored
against the real test images of its own dataset; ``all`` pools every test image.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from sidflow.train.common import calibrate_threshold


def binary_metrics(y, p, threshold: float) -> dict:
    """Accuracy (at ``threshold`` and 0.5), real/fake accuracy, F1, AP, AUC.

    Metrics that need both classes are ``None`` (never NaN) when one is missing;
    an empty input gives counts of zero and ``None`` everywhere else.
    """
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    n_real, n_fake = int((y == 0).sum()), int((y == 1).sum())
    out = {"n_real": n_real, "n_fake": n_fake, "threshold": float(threshold)}
    if len(y) == 0:
        return out | dict.fromkeys(
            ["accuracy", "accuracy_at_0.5", "real_accuracy", "fake_accuracy", "f1", "ap", "auc"]
        )
    pred = p >= threshold
    out["accuracy"] = float((pred == (y == 1)).mean())
    out["accuracy_at_0.5"] = float(((p >= 0.5) == (y == 1)).mean())
    out["real_accuracy"] = float((~pred[y == 0]).mean()) if n_real else None
    out["fake_accuracy"] = float(pred[y == 1].mean()) if n_fake else None
    tp = int((pred & (y == 1)).sum())
    denom = int(pred.sum()) + n_fake
    out["f1"] = 2 * tp / denom if denom and n_fake else None  # undefined without fakes
    both = n_real > 0 and n_fake > 0
    out["ap"] = float(average_precision_score(y, p)) if both else None
    out["auc"] = float(roc_auc_score(y, p)) if both else None
    return out


def object_metrics(scores: pd.DataFrame) -> dict:
    """Object-class accuracy of a detector's object head on the rows of ``scores`` whose
    class is known (``None`` when the detector has no object head or no class is known)."""
    if "object_pred" not in scores or "object_class" not in scores:
        return {"object_accuracy": None, "n_object": 0}
    known = scores[scores["object_pred"].notna() & scores["object_class"].notna()]
    if known.empty:
        return {"object_accuracy": None, "n_object": 0}
    acc = float((known["object_pred"] == known["object_class"]).mean())
    return {"object_accuracy": acc, "n_object": int(len(known))}


def evaluate_scores(scores: pd.DataFrame, train_generators: list[str]) -> pd.DataFrame:
    """Tidy metrics: one row per (detector, perturbation, dataset, generator) plus pooled rows."""
    scores = scores.assign(key=scores["dataset"] + "/" + scores["generator"])
    rows = []
    for (detector, perturbation), df in scores.groupby(["detector", "perturbation"], sort=True):
        val = df[(df["split"] == "val") & df["key"].isin(train_generators)]
        if val.empty:
            raise ValueError(
                f"{detector}: no validation scores for the training generators {train_generators}"
            )
        threshold = calibrate_threshold(val["label"], val["p_fake"])
        test = df[df["split"] == "test"]
        for (dataset, generator), g in test.groupby(["dataset", "generator"], sort=True):
            key = f"{dataset}/{generator}"
            if g["label"].iloc[0] == 1:
                reals = test[(test["dataset"] == dataset) & (test["label"] == 0)]
                if reals.empty:
                    reals = test[test["label"] == 0]
                part = pd.concat([reals, g])
            else:
                part = g
            m = binary_metrics(part["label"], part["p_fake"], threshold)
            rows.append({"detector": detector, "perturbation": perturbation, "dataset": dataset,
                         "generator": generator, "is_real": bool(g["label"].iloc[0] == 0),
                         "in_distribution": key in train_generators, **m, **object_metrics(g)})  # fmt: skip
        m = binary_metrics(test["label"], test["p_fake"], threshold)
        rows.append({"detector": detector, "perturbation": perturbation, "dataset": "all", "generator": "all",
                     "is_real": False, "in_distribution": False, **m, **object_metrics(test)})  # fmt: skip
    return pd.DataFrame(rows)


def metrics_json(table: pd.DataFrame) -> dict:
    """Nested {detector: {dataset/generator: {metric: value}}} for ``dvc metrics show``."""
    out: dict = {}
    keep = [
        "accuracy",
        "accuracy_at_0.5",
        "real_accuracy",
        "fake_accuracy",
        "ap",
        "auc",
        "threshold",
        "object_accuracy",
    ]
    for r in table[table["perturbation"] == "none"].to_dict("records"):
        vals = {
            k: r[k]
            for k in keep
            if r[k] is not None and not (isinstance(r[k], float) and math.isnan(r[k]))
        }
        out.setdefault(r["detector"], {})[f"{r['dataset']}/{r['generator']}"] = vals
    return out


def run_evaluation(score_paths, train_generators, table_path, csv_path, json_path) -> pd.DataFrame:
    """Evaluate step: read scores tables, write tidy Parquet/CSV and ``metrics.json``."""
    from sidflow.io import atomic_path, write_json, write_parquet

    scores = pd.concat([pd.read_parquet(p) for p in score_paths], ignore_index=True)
    table = evaluate_scores(scores, train_generators)
    write_parquet(table_path, table)
    with atomic_path(csv_path, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    write_json(json_path, metrics_json(table))
    return table
