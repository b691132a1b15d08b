"""Shortcut audit, part 2: can a classifier tell real from fake by file metadata alone?

A gradient-boosting classifier (scikit-learn's ``HistGradientBoostingClassifier``,
which takes missing values and categories natively) is trained on the raw-file
metadata of ``sidflow.audit.metadata`` for the training split of the training
generators, and scores the val/test splits of every generator. It writes the same
scores table as every detector (detector ``audit-metadata``), so evaluation reports
its AP per generator beside the detectors and calibrates its threshold the same way.

High audit AP means the *raw* dataset is separable by format, size or compression
alone; sidflow's preprocessing (same decode/resize/JPEG for all) removes those cues
from what the detectors see, but a result on raw files elsewhere would be suspect.

Run: ``rule shortcut_audit`` (``workflow/rules/audit.smk``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from sidflow.audit.metadata import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from sidflow.config import AUDIT_DETECTOR as DETECTOR
from sidflow.io import write_json, write_parquet
from sidflow.tables import SCORE_SPLITS, SCORES_SCHEMA, scores_table

log = logging.getLogger(__name__)


def join_metadata(metadata: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """Manifest rows with their raw metadata (files absent from the manifest, i.e.
    quarantined or duplicate ones, drop out; every manifest row must have metadata)."""
    meta = metadata.drop(columns=["source_path"]).drop_duplicates("image_id")
    joined = manifest.merge(meta, on="image_id", how="left", validate="one_to_one")
    missing = joined["format"].isna()
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} manifest rows have no raw metadata "
            f"(first: {joined.loc[missing, 'source_path'].iloc[0]}); was data/raw changed after labelling?"
        )
    return joined


def feature_frame(df: pd.DataFrame, categories: dict[str, list]) -> pd.DataFrame:
    """Model inputs: the numeric features training saw (``categories["numeric"]``) as
    float, and the categoricals with the training categories."""
    out = df[list(categories["numeric"])].astype("float64").copy()
    for col in CATEGORICAL_FEATURES:
        out[col] = pd.Categorical(df[col].astype(str), categories=categories[col])
    return out


def fit_audit(train: pd.DataFrame, seed: int = 0):
    """Fit the metadata classifier on ``train`` (needs both labels); returns (model, categories)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    labels = set(train["label"].unique())
    if labels != {0, 1}:
        raise ValueError(
            f"shortcut audit: the training split needs real and fake images, has labels {sorted(labels)}"
        )
    categories = {c: sorted(train[c].astype(str).unique()) for c in CATEGORICAL_FEATURES}
    # a feature no training file has (e.g. JPEG tables in a PNG-only set) carries nothing
    categories["numeric"] = [c for c in NUMERIC_FEATURES if train[c].notna().any()]
    model = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, categorical_features="from_dtype", random_state=seed
    )
    model.fit(feature_frame(train, categories), train["label"].astype(int))
    return model, categories


def feature_importance(model, categories, val: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Drop in validation AP when one feature is shuffled (permutation importance)."""
    from sklearn.inspection import permutation_importance

    if val["label"].nunique() < 2:
        return {}
    X = feature_frame(val, categories)
    r = permutation_importance(model, X, val["label"].astype(int), scoring="average_precision",
                               n_repeats=3, random_state=seed)  # fmt: skip
    return {
        c: float(v)
        for c, v in sorted(zip(X.columns, r.importances_mean, strict=True), key=lambda t: -t[1])
    }


def format_summary(df: pd.DataFrame) -> dict:
    """What one generator's raw files look like (for the report's audit table)."""
    fmt = df["format"].value_counts(normalize=True)
    return {
        "n": int(len(df)),
        "formats": ", ".join(f"{k} {v:.0%}" for k, v in fmt.items()),
        "median_size": f"{int(df['width'].median())}x{int(df['height'].median())}"
        if df["width"].notna().any()
        else "",
        "median_kb": round(float(df["file_bytes"].median()) / 1024, 2),
        "median_jpeg_quality": float(df["jpeg_quality"].median())
        if df["jpeg_quality"].notna().any()
        else None,
    }


def run_shortcut_audit(
    metadata_paths: dict[str, str],
    manifest_paths: dict[str, str],
    train_keys: list[str],
    score_paths: dict[str, str],
    summary_path: str | Path,
    seed: int = 0,
) -> dict:
    """Train on the train split of ``train_keys``; write a scores table per key in ``score_paths``."""
    data = {
        key: join_metadata(
            pd.read_parquet(metadata_paths[key]), pd.read_parquet(manifest_paths[key])
        )
        for key in score_paths
    }
    train = pd.concat([data[k][data[k]["split"] == "train"] for k in train_keys], ignore_index=True)
    model, categories = fit_audit(train, seed)
    val = pd.concat([data[k][data[k]["split"] == "val"] for k in train_keys], ignore_index=True)
    for key, out in score_paths.items():
        df = data[key][data[key]["split"].isin(SCORE_SPLITS)].reset_index(drop=True)
        p = model.predict_proba(feature_frame(df, categories))[:, 1] if len(df) else np.array([])
        write_parquet(out, scores_table(df, p, DETECTOR, "none"), SCORES_SCHEMA)
    summary = {
        "detector": DETECTOR,
        "train_images": int(len(train)),
        "features": list(categories["numeric"]) + list(CATEGORICAL_FEATURES),
        "importance_val_ap_drop": feature_importance(model, categories, val, seed),
        "generators": {key: format_summary(df) for key, df in data.items()},
    }
    write_json(summary_path, summary)
    log.info(
        "shortcut audit: trained on %d images; importance %s",
        len(train),
        summary["importance_val_ap_drop"],
    )
    return summary
