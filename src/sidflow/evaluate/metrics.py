"""Metrics per generator and pooled, at a validation-calibrated threshold.

    table = evaluate_scores(scores, train_generators=["demo/real", "demo/ae-deconv"])

For each detector the threshold is calibrated on the *validation* split of its
training generators (never on test data). Each fake generator is then scored
against the real test images of its own dataset; ``all`` pools every test image, and
``mean`` is the unweighted mean over the fake generators' rows (the papers' "average over
subsets": every generator counts once, whatever its number of images).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from sidflow.tables import MEAN, POOLED
from sidflow.thresholds import calibrate_threshold

METRICS = ["accuracy", "accuracy_at_0.5", "real_accuracy", "fake_accuracy", "f1", "ap", "auc",
           "tpr_at_fpr_1", "tpr_at_fpr_5", "brier", "ece", "tp", "fp", "tn", "fn",
           "accuracy_ci_low", "accuracy_ci_high", "ap_ci_low", "ap_ci_high", "other"]  # fmt: skip
# metrics the mean row averages (counts and intervals of a mean over generators are not defined)
MEAN_OF = ["accuracy", "accuracy_at_0.5", "real_accuracy", "fake_accuracy", "f1", "ap", "auc",
           "tpr_at_fpr_1", "tpr_at_fpr_5", "brier", "ece", "object_accuracy", "attribution_accuracy"]  # fmt: skip


def tpr_at_fpr(y, p, max_fpr: float) -> float:
    """Highest true-positive rate at a threshold whose false-positive rate is <= ``max_fpr``."""
    fpr, tpr, _ = roc_curve(y, p)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def expected_calibration_error(y, p, bins: int = 15) -> float:
    """ECE of p_fake as a probability of "fake": equal-width bins, |fake rate - mean p|,
    weighted by bin size."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for b in np.unique(which):
        m = which == b
        err += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(err)


def binary_metrics(y, p, threshold: float, n_boot: int = 1000, verdict=None) -> dict:
    """Accuracy (at ``threshold`` and 0.5), real/fake accuracy, F1, AP, AUC, TPR at 1%/5% FPR,
    Brier score, ECE, confusion counts and bootstrap 95% intervals for accuracy and AP.

    ``verdict`` (optional, ``real``/``fake``/``other`` per image): the detector's own hard
    decision (a generated caption). Accuracy, real/fake accuracy, F1 and the confusion counts
    then come from it, ``other`` counting as wrong for either class (and counted in
    ``other``); there is no threshold, and AP/AUC, TPR, Brier and ECE still rank ``p``.

    Metrics that need both classes are ``None`` (never NaN) when one is missing;
    an empty input gives counts of zero and ``None`` everywhere else.
    """
    from sidflow.evaluate.bootstrap import bootstrap_ci

    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    n_real, n_fake = int((y == 0).sum()), int((y == 1).sum())
    out = {"n_real": n_real, "n_fake": n_fake, "threshold": float(threshold)}
    if len(y) == 0:
        return out | dict.fromkeys(METRICS)
    if verdict is None:
        pred, said_real = p >= threshold, p < threshold
        out["other"] = None
    else:
        verdict = np.asarray(verdict, dtype=object)
        pred, said_real = verdict == "fake", verdict == "real"
        out["threshold"], out["other"] = None, int((verdict == "other").sum())
    correct = (pred & (y == 1)) | (said_real & (y == 0))
    out["accuracy"] = float(correct.mean())
    out["accuracy_at_0.5"] = float(((p >= 0.5) == (y == 1)).mean()) if verdict is None else None
    out["real_accuracy"] = float(said_real[y == 0].mean()) if n_real else None
    out["fake_accuracy"] = float(pred[y == 1].mean()) if n_fake else None
    tp = int((pred & (y == 1)).sum())
    denom = int(pred.sum()) + n_fake
    out["f1"] = 2 * tp / denom if denom and n_fake else None  # undefined without fakes
    both = n_real > 0 and n_fake > 0
    out["ap"] = float(average_precision_score(y, p)) if both else None
    out["auc"] = float(roc_auc_score(y, p)) if both else None
    out["tpr_at_fpr_1"] = tpr_at_fpr(y, p, 0.01) if both else None
    out["tpr_at_fpr_5"] = tpr_at_fpr(y, p, 0.05) if both else None
    out["brier"] = float(np.mean((p - y) ** 2))
    out["ece"] = expected_calibration_error(y, p)
    out["tp"], out["fp"] = tp, int((pred & (y == 0)).sum())
    out["tn"], out["fn"] = int((said_real & (y == 0)).sum()), int((~pred & (y == 1)).sum())
    ci = {"accuracy_ci": None, "ap_ci": None}
    if n_boot:
        ci = bootstrap_ci(y, p, threshold, n_boot=n_boot)
        if verdict is not None:  # accuracy of the verdicts: a score that is right iff they are
            right = np.where(correct, y, 1 - y).astype(float)
            ci["accuracy_ci"] = bootstrap_ci(y, right, 0.5, n_boot=n_boot)["accuracy_ci"]
    out["accuracy_ci_low"], out["accuracy_ci_high"] = ci["accuracy_ci"] or (None, None)
    out["ap_ci_low"], out["ap_ci_high"] = ci["ap_ci"] or (None, None)
    return out


def true_source(scores: pd.DataFrame) -> pd.Series:
    """What an attribution head should answer per row: ``real``, or ``dataset/generator``."""
    key = scores["dataset"].astype(str) + "/" + scores["generator"].astype(str)
    return key.where(scores["label"].astype(int) == 1, "real")


def attribution_metrics(scores: pd.DataFrame) -> dict:
    """Accuracy of a detector's attribution head (real + each training generator) on the rows
    of ``scores`` (``None`` without such a head). A generator the head was not trained on can
    never be named, so its rows count as wrong: attribution is closed-set."""
    if "generator_pred" not in scores:
        return {"attribution_accuracy": None, "n_attribution": 0}
    known = scores[scores["generator_pred"].notna()]
    if known.empty:
        return {"attribution_accuracy": None, "n_attribution": 0}
    acc = float((known["generator_pred"] == true_source(known)).mean())
    return {"attribution_accuracy": acc, "n_attribution": int(len(known))}


def attribution_confusion(scores: pd.DataFrame) -> pd.DataFrame:
    """Counts ``detector, true, pred, n`` of every attribution head on the clean test split
    (the report draws one (N+1) x (N+1) matrix per detector)."""
    cols = ["detector", "true", "pred", "n"]
    if "generator_pred" not in scores:
        return pd.DataFrame(columns=cols)
    t = scores[
        (scores["split"] == "test")
        & (scores["perturbation"] == "none")
        & scores["generator_pred"].notna()
    ]
    if t.empty:
        return pd.DataFrame(columns=cols)
    t = t.assign(true=true_source(t), pred=t["generator_pred"])
    return t.groupby(["detector", "true", "pred"]).size().rename("n").reset_index()[cols]


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


def mean_row(rows: list[dict], n_real: int) -> dict | None:
    """The mean over generators of per-generator metric rows: each fake generator (scored
    against its reals) counts once; ``n_generators`` of them, ``n_real`` the real test images
    involved. ``None`` without fake rows."""
    fakes = [r for r in rows if not r["is_real"]]
    if not fakes:
        return None
    first = fakes[0]
    out = {"detector": first["detector"], "perturbation": first["perturbation"], "dataset": MEAN,
           "generator": MEAN, "is_real": False, "in_distribution": False, "threshold": first["threshold"],
           "n_real": int(n_real), "n_fake": int(sum(r["n_fake"] for r in fakes)), "n_generators": len(fakes)}  # fmt: skip
    for k in MEAN_OF:
        vals = [r.get(k) for r in fakes if r.get(k) is not None and not pd.isna(r.get(k))]
        out[k] = float(np.mean(vals)) if vals else None
    return out | {k: None for k in METRICS if k not in out}


def evaluate_scores(
    scores: pd.DataFrame, train_generators: list[str], real_pairs: dict[str, str] | None = None
) -> pd.DataFrame:
    """Tidy metrics: one row per (detector, perturbation, dataset, generator) plus pooled rows
    (``all``: every test image) and mean rows (``mean``: unweighted over fake generators).

    Each detector's threshold is calibrated once, on its *clean* validation scores of the
    training generators, and applied unchanged to every perturbation (a deployed detector
    does not know the perturbation it faces). A fake generator faces the real test images of
    its dataset, or only those of its paired real generator (``real_pairs``: ``dataset/fake``
    -> ``dataset/real``, the sheet's ``pair`` column) when its dataset ships reals per set."""
    real_pairs = real_pairs or {}
    scores = scores.assign(key=scores["dataset"] + "/" + scores["generator"])
    rows = []
    thresholds = {}
    for detector, df in scores[scores["perturbation"] == "none"].groupby("detector", sort=True):
        val = df[(df["split"] == "val") & df["key"].isin(train_generators)]
        if val.empty:
            raise ValueError(
                f"{detector}: no validation scores for the training generators {train_generators}"
            )
        thresholds[detector] = calibrate_threshold(val["label"], val["p_fake"])
    for (detector, perturbation), df in scores.groupby(["detector", "perturbation"], sort=True):
        if detector not in thresholds:
            raise ValueError(
                f"{detector}: perturbed scores without clean ('none') validation scores"
            )
        threshold = thresholds[detector]
        test = df[df["split"] == "test"]
        per_generator = []
        for (dataset, generator), g in test.groupby(["dataset", "generator"], sort=True):
            key = f"{dataset}/{generator}"
            if g["label"].iloc[0] == 1:
                if key in real_pairs:  # its own real set only
                    reals = test[(test["key"] == real_pairs[key]) & (test["label"] == 0)]
                else:
                    reals = test[(test["dataset"] == dataset) & (test["label"] == 0)]
                    if reals.empty:
                        reals = test[test["label"] == 0]
                part = pd.concat([reals, g])
            else:
                part = g
            m = binary_metrics(part["label"], part["p_fake"], threshold, verdict=_verdicts(part))
            per_generator.append({"detector": detector, "perturbation": perturbation, "dataset": dataset,
                                  "generator": generator, "is_real": bool(g["label"].iloc[0] == 0),
                                  "in_distribution": key in train_generators, **m, **object_metrics(g),
                                  **attribution_metrics(g)})  # fmt: skip
        m = binary_metrics(test["label"], test["p_fake"], threshold, verdict=_verdicts(test))
        rows += per_generator
        mean = mean_row(per_generator, m["n_real"])
        rows += [mean] if mean else []
        rows.append({"detector": detector, "perturbation": perturbation, "dataset": POOLED, "generator": POOLED,
                     "is_real": False, "in_distribution": False, **m, **object_metrics(test),
                     **attribution_metrics(test)})  # fmt: skip
    return pd.DataFrame(rows)


def _verdicts(scores: pd.DataFrame):
    """The rows' hard verdicts when the detector gives them (every row has one), else None."""
    if "verdict" not in scores or scores.empty or scores["verdict"].isna().any():
        return None
    return scores["verdict"].to_numpy()


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
        "attribution_accuracy",
        "tpr_at_fpr_1",
        "tpr_at_fpr_5",
        "brier",
        "ece",
        "accuracy_ci_low",
        "accuracy_ci_high",
        "ap_ci_low",
        "ap_ci_high",
    ]
    for r in table[table["perturbation"] == "none"].to_dict("records"):
        vals = {
            k: r[k]
            for k in keep
            if r[k] is not None and not (isinstance(r[k], float) and math.isnan(r[k]))
        }
        out.setdefault(r["detector"], {})[f"{r['dataset']}/{r['generator']}"] = vals
    return out


def curve_points(scores: pd.DataFrame, max_points: int = 200) -> dict[str, pd.DataFrame]:
    """ROC, precision-recall and calibration points per detector (pooled test split), thinned
    to ``max_points`` per curve: the files ``dvc plots show`` and the report draw."""
    from sklearn.metrics import precision_recall_curve

    rows = {"roc": [], "pr": [], "calibration": []}
    test = scores[(scores["split"] == "test") & (scores["perturbation"] == "none")]
    for detector, g in test.groupby("detector", sort=True):
        y, p = g["label"].to_numpy(int), g["p_fake"].to_numpy(float)
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        prec, rec, _ = precision_recall_curve(y, p)
        for name, (x, yy) in {"roc": (fpr, tpr), "pr": (rec[::-1], prec[::-1])}.items():
            keep = np.unique(np.linspace(0, len(x) - 1, min(len(x), max_points)).astype(int))
            cols = ("fpr", "tpr") if name == "roc" else ("recall", "precision")
            rows[name].append(
                pd.DataFrame({"detector": detector, cols[0]: x[keep], cols[1]: yy[keep]})
            )
        bins = np.minimum((p * 10).astype(int), 9)
        cal = pd.DataFrame({"bin": bins, "p": p, "y": y}).groupby("bin").agg(
            mean_p_fake=("p", "mean"), fake_rate=("y", "mean"), n=("y", "size"))  # fmt: skip
        rows["calibration"].append(cal.reset_index().assign(detector=detector))
    return {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in rows.items()}


def run_evaluation(score_paths, train_generators, table_path, csv_path, json_path, pairs=(),
                   comparisons_path=None, plots_dir=None, real_pairs=None) -> pd.DataFrame:  # fmt: skip
    """Evaluate step: read scores tables, write tidy Parquet/CSV, ``metrics.json``, the paired
    KD-vs-baseline comparisons and ROC/PR/calibration points (``plots_dir/*.csv``)."""
    from sidflow.evaluate.compare import compare_detectors
    from sidflow.io import atomic_path, write_json, write_parquet

    scores = pd.concat([pd.read_parquet(p) for p in score_paths], ignore_index=True)
    table = evaluate_scores(scores, train_generators, real_pairs)
    write_parquet(table_path, table)
    with atomic_path(csv_path, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    write_json(json_path, metrics_json(table))
    if comparisons_path:
        comp = compare_detectors(scores, table, pairs)
        with atomic_path(comparisons_path, suffix=".csv") as tmp:
            comp.to_csv(tmp, index=False)
    if plots_dir:
        from pathlib import Path

        for name, df in {
            **curve_points(scores),
            "attribution": attribution_confusion(scores),
        }.items():
            with atomic_path(Path(plots_dir) / f"{name}.csv", suffix=".csv") as tmp:
                df.to_csv(tmp, index=False)
    return table
