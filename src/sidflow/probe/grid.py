"""One probe-grid cell, the ranking of all cells, and the cross-generator matrix.

A cell = (backbone, reduction, classifier, transform). It trains on the training generators'
train split under ``transform``, calibrates its threshold on clean validation images (as every
sidflow detector does), and scores the test split under every grid transform; the scores go
through :func:`sidflow.evaluate.metrics.evaluate_scores`, so a cell's numbers mean exactly what
the deep detectors' numbers mean. Rules: ``probe_fit`` (one job per cell), ``probe_rank``,
``probe_cross`` (``workflow/rules/probe.smk``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from sidflow.evaluate.metrics import evaluate_scores
from sidflow.io import read_json, write_json, write_parquet
from sidflow.probe.classifiers import make_model, save_model
from sidflow.probe.features import load_features
from sidflow.tables import MEAN, POOLED
from sidflow.train.common import balanced_subset

log = logging.getLogger(__name__)


def cell_name(backbone: str, reduction: str, classifier: str, transform: str) -> str:
    return f"{backbone}/{reduction}/{classifier}/{transform}"


def _keys(df: pd.DataFrame) -> pd.Series:
    return df["dataset"] + "/" + df["generator"]


def fit_cell(
    features: dict[str, list[list[str]]],
    train_generators: list[str],
    backbone: str,
    reduction: str,
    reduction_spec: dict,
    classifier: str,
    transform: str,
    out_dir: str | Path,
    seed: int = 0,
    max_train: int = 0,
) -> dict:
    """Fit one cell and write ``model.skops``, ``scores.parquet``, ``metrics.parquet``, ``cell.json``.

    ``features[t]``: for transform ``t`` (``none`` always present), the feature files per
    backbone part (see :func:`~sidflow.probe.features.load_features`).
    """
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    train_df, train_X = load_features(features[transform])
    in_train = (train_df["split"] == "train") & _keys(train_df).isin(train_generators)
    idx = balanced_subset(
        np.flatnonzero(in_train.to_numpy()), train_df["label"].to_numpy(), max_train, seed
    )
    if len(np.unique(train_df["label"].to_numpy()[idx])) < 2:
        raise ValueError(
            f"cell {cell_name(backbone, reduction, classifier, transform)}: training data has one class"
        )
    model = make_model(reduction_spec, classifier, seed)
    y_train = train_df["label"].to_numpy()[idx]
    model.fit(train_X[idx], y_train)
    fit_s = time.perf_counter() - t0
    # accuracy on its own training images (at 0.5), beside the test accuracy: over-fitting shows
    pred_train = model.predict_proba(train_X[idx])[:, 1] >= 0.5
    train_accuracy = float((pred_train.astype(int) == y_train).mean())
    name = f"probe:{cell_name(backbone, reduction, classifier, transform)}"
    frames = []
    for t, parts in features.items():
        df, X = (train_df, train_X) if t == transform else load_features(parts)
        splits = ("val", "test") if t == "none" else ("test",)
        keep = df["split"].isin(splits).to_numpy()
        p = model.predict_proba(X[keep])[:, 1]
        frames.append(df[keep][["image_id", "dataset", "generator", "split", "label"]]
                      .assign(detector=name, perturbation=t, p_fake=p.astype(np.float32)))  # fmt: skip
    scores = pd.concat(frames, ignore_index=True)
    metrics = evaluate_scores(scores, train_generators)
    val = scores[(scores["split"] == "val") & (scores["perturbation"] == "none")]
    val = val[_keys(val).isin(train_generators)]
    model_sha = save_model(model, out_dir / "model.skops")
    write_parquet(out_dir / "scores.parquet", scores)
    write_parquet(out_dir / "metrics.parquet", metrics)
    pooled = metrics[(metrics["generator"] == POOLED) & (metrics["perturbation"] == "none")].iloc[0]
    card = {
        "backbone": backbone, "reduction": reduction, "classifier": classifier, "transform": transform,
        "val_ap": float(average_precision_score(val["label"], val["p_fake"])),
        "test_ap": float(pooled["ap"]), "test_auc": float(pooled["auc"]), "test_accuracy": float(pooled["accuracy"]),
        "train_accuracy": train_accuracy,
        "threshold": float(pooled["threshold"]), "n_train": int(len(idx)), "dim": int(train_X.shape[1]),
        "fit_seconds": round(fit_s, 3), "model_sha256": model_sha,
    }  # fmt: skip
    write_json(out_dir / "cell.json", card)
    log.info("cell %s: val AP %.4f, test AP %.4f", name, card["val_ap"], card["test_ap"])
    return card


def rank_cells(
    cell_dirs: list[str | Path], out_csv: str | Path, out_metrics: str | Path
) -> pd.DataFrame:
    """Ranked table of cells by validation AP (ties: test AP), with test AP per generator and
    per test transform; and every cell's full metrics in one Parquet file."""
    cards, metrics = [], []
    for d in cell_dirs:
        card = read_json(Path(d) / "cell.json")
        m = pd.read_parquet(Path(d) / "metrics.parquet")
        for r in m.itertuples():
            if r.generator == MEAN and r.perturbation == "none":
                card["test_ap_mean"] = r.ap  # unweighted mean over the fake generators
            elif r.generator != POOLED and r.perturbation == "none":
                card[f"ap[{r.dataset}/{r.generator}]"] = r.ap
            if r.generator == POOLED and r.perturbation != "none":
                card[f"ap[{r.perturbation}]"] = r.ap
        cards.append(card)
        metrics.append(m)
    table = pd.DataFrame(cards).sort_values(["val_ap", "test_ap"], ascending=False, kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    table = table.drop(columns=["model_sha256"])
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    write_parquet(out_metrics, pd.concat(metrics, ignore_index=True))
    return table


def cross_matrix(
    parts: list[list[str]],
    reduction_spec: dict,
    classifier: str,
    out_csv: str | Path | None,
    seed: int = 0,
    max_train: int = 0,
    train_parts: list[list[str]] | None = None,
) -> pd.DataFrame:
    """Train on real + fake generator A (train split), test on real + every fake B (test split).
    ``train_parts``: the training features under a train-time transform (default: ``parts``,
    which are always the clean test features).

    Reals are those of the fake's own dataset (all reals when that dataset has none), so a
    cross-dataset cell measures transfer to another dataset's real and fake images.
    """
    df, X = load_features(parts)
    X_train = X if train_parts is None else _aligned_features(train_parts, df["image_id"])
    y, keys = df["label"].to_numpy(), _keys(df).to_numpy()
    fakes = sorted(set(keys[y == 1]))

    def with_reals(key: str, split: str) -> np.ndarray:
        ds = key.split("/")[0]
        reals = (y == 0) & (df["split"] == split).to_numpy()
        own = reals & (df["dataset"] == ds).to_numpy()
        return np.flatnonzero(
            (own if own.any() else reals) | ((keys == key) & (df["split"] == split).to_numpy())
        )

    rows = []
    for a in fakes:
        tr = balanced_subset(with_reals(a, "train"), y, max_train, seed)
        model = make_model(reduction_spec, classifier, seed).fit(X_train[tr], y[tr])
        for b in fakes:
            te = with_reals(b, "test")
            if len(np.unique(y[te])) < 2:
                continue
            p = model.predict_proba(X[te])[:, 1]
            rows.append({"train": a, "test": b, "ap": average_precision_score(y[te], p),
                         "auc": roc_auc_score(y[te], p), "n_test": len(te)})  # fmt: skip
    out = pd.DataFrame(rows, columns=["train", "test", "ap", "auc", "n_test"])
    if out_csv is not None:
        _write_csv(out, out_csv)
    return out


def _write_csv(table: pd.DataFrame, path: str | Path) -> None:
    from sidflow.io import atomic_path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _aligned_features(parts: list[list[str]], image_ids: pd.Series) -> np.ndarray:
    """Features of ``parts`` in the row order of ``image_ids`` (another transform's files)."""
    df, X = load_features(parts)
    pos = pd.Series(np.arange(len(df)), index=df["image_id"].to_numpy())
    missing = ~image_ids.isin(pos.index)
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} images have no features under the train-time transform"
        )
    return X[pos.loc[image_ids.to_numpy()].to_numpy()]


def best_cells(ranking: pd.DataFrame) -> pd.DataFrame:
    """Per backbone, the (reduction, classifier) of its best cell by validation AP (ties: test
    AP, then name): the cell the study carries into its cross-dataset matrices."""
    order = ranking.sort_values(["val_ap", "test_ap", "reduction", "classifier"],
                                ascending=[False, False, True, True], kind="stable")  # fmt: skip
    return order.groupby("backbone", sort=False).head(1)[
        ["backbone", "reduction", "classifier", "val_ap"]
    ]


def cross_best(ranking_csv: str | Path, features: dict[str, dict[str, list[list[str]]]],
               reductions: dict[str, dict], out_csv: str | Path, seed: int = 0,
               max_train: int = 0) -> pd.DataFrame:  # fmt: skip
    """The cross-generator matrix of each backbone's best cell under every train-time transform
    (``features[backbone][transform]``; tests always on clean features)."""
    frames = []
    for r in best_cells(pd.read_csv(ranking_csv)).itertuples():
        for transform, parts in features[r.backbone].items():
            m = cross_matrix(features[r.backbone]["none"], reductions[r.reduction], r.classifier,
                             None, seed, max_train, train_parts=parts)  # fmt: skip
            frames.append(m.assign(backbone=r.backbone, reduction=r.reduction, classifier=r.classifier,
                                   transform=transform))  # fmt: skip
    cols = [
        "backbone",
        "reduction",
        "classifier",
        "transform",
        "train",
        "test",
        "ap",
        "auc",
        "n_test",
    ]
    out = pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
    _write_csv(out, out_csv)
    return out
