"""Label step: one manifest per (dataset, generator).

A manifest row: ``image_id`` (sha256 of the source bytes, the key everywhere),
``dataset``, ``generator``, ``label`` (0 real, 1 fake), ``split``,
``object_class`` (when the source encodes one), ``source_path``, ``pixel_sha256``; with
``splits.mode: kfold`` also ``fold`` (and every split ``test``: :mod:`sidflow.data.folds`).

Splits come from the image's hash, not from its position in a listing, so adding
images never moves an existing image to another split. Exact duplicates (the same
source bytes twice) keep one row and are listed in ``<generator>.duplicates.parquet``;
two different files that give the same processed image in different splits are
reported as cross-split duplicates there too.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from sidflow.data.folds import assign_folds, kfold_k
from sidflow.data.folds import fold_unit as _unit
from sidflow.data.preprocess import part_files
from sidflow.io import write_json, write_parquet

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")  # plus "unused": beyond train_per_generator (never read)
LABELS = {"real": 0, "fake": 1}


def assign_split(image_id: str, fractions: dict[str, float], salt: str = "") -> str:
    """Map a hash to a split with the given fractions (train/val/test), stable forever."""
    u = _unit(image_id, salt)
    edge = 0.0
    for split in SPLITS:
        edge += fractions[split]
        if u < edge:
            return split
    return SPLITS[-1]


def assign_splits(image_ids: list[str], splits: dict, salt: str = "") -> list[str]:
    """Each image's split. By fraction (:func:`assign_split`) unless ``splits`` fixes counts:

    * ``test_per_generator: N``: the N images of lowest hash are the test split; the others
      are train or val by a second hash, in the ratio of the ``train``/``val`` fractions;
    * ``train_per_generator: M``: at most M training images (those of lowest hash); the
      rest of the would-be training images are ``unused`` (kept in the manifest, never read).

    Deterministic by hash: adding images changes an existing image's split only where a
    new image of lower hash displaces it from a fixed-size split (then to the next one).
    """
    test_n, train_n = splits.get("test_per_generator"), splits.get("train_per_generator")
    if test_n is None and train_n is None:
        return [assign_split(i, splits, salt) for i in image_ids]
    u = [_unit(i, salt) for i in image_ids]
    rank = {i: r for r, i in enumerate(sorted(range(len(u)), key=u.__getitem__))}
    val_share = splits["val"] / (splits["train"] + splits["val"])
    if test_n is None:  # train capped only: test and val stay by fraction
        out = [assign_split(i, splits, salt) for i in image_ids]
    else:
        out = ["test" if rank[k] < test_n else "val" if _unit(i, salt + "val") < val_share else "train"
               for k, i in enumerate(image_ids)]  # fmt: skip
    if train_n is not None:
        train = sorted((k for k, s in enumerate(out) if s == "train"), key=u.__getitem__)
        for k in train[train_n:]:
            out[k] = "unused"
    return out


def parse_object_class(source_path: str, spec: dict | None) -> str | None:
    """Object class from a file name, by the dataset's ``object_class`` spec (or None)."""
    if not spec:
        return None
    m = re.search(spec["pattern"], Path(source_path).name)
    value = m.group("cls") if m else spec.get("default")
    if value is None:
        return None
    names = spec.get("names")
    if names and str(value).isdigit():
        index = int(value) - int(spec.get("index_base", 0))
        if not 0 <= index < len(names):
            raise ValueError(
                f"{source_path}: object class {value} is outside the {len(names)} names"
            )
        return names[index]
    return str(value)


def build_manifest(
    processed_dir: str | Path,
    dataset: str,
    generator: str,
    label: str,
    fractions: dict[str, float],
    object_class: dict | None = None,
    split_salt: str = "",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (manifest, duplicates) for one generator's processed shards."""
    cols = ["image_id", "source_path", "pixel_sha256"]
    parts = [pq.read_table(p, columns=cols).to_pandas() for p in part_files(processed_dir)]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    df = df.sort_values("source_path", kind="stable").reset_index(drop=True)
    if label not in LABELS:
        raise ValueError(
            f"{dataset}/{generator}: label must be one of {sorted(LABELS)}, got {label!r}"
        )
    dup_mask = df.duplicated("image_id", keep="first")
    exact = df[dup_mask].assign(kind="exact duplicate of an earlier file")
    df = df[~dup_mask].reset_index(drop=True)
    df.insert(1, "dataset", dataset)
    df.insert(2, "generator", generator)
    df.insert(3, "label", LABELS[label])
    ids = df["image_id"].tolist()
    if kfold_k(fractions):  # every image tested once, in its fold (sidflow.data.folds)
        df.insert(4, "split", "test")
        df.insert(
            5, "fold", pd.Series(assign_folds(ids, kfold_k(fractions), split_salt), dtype="int16")
        )
    else:
        df.insert(4, "split", assign_splits(ids, fractions, split_salt))
    df.insert(df.columns.get_loc("split") + 1 + ("fold" in df), "object_class",
              [parse_object_class(p, object_class) for p in df["source_path"]])  # fmt: skip
    by_pixels = df.groupby("pixel_sha256")["fold" if "fold" in df else "split"].nunique()
    cross = df[df["pixel_sha256"].isin(by_pixels[by_pixels > 1].index)].assign(
        kind="same processed image in several splits"  # (folds, with k-fold)
    )
    dups = pd.concat([exact, cross], ignore_index=True)[
        ["image_id", "source_path", "pixel_sha256", "kind"]
    ]
    return df, dups


def label_generator(
    processed_dir: str | Path,
    manifest_path: str | Path,
    duplicates_path: str | Path,
    dataset: str,
    generator: str,
    label: str,
    fractions: dict[str, float],
    object_class: dict | None = None,
    split_salt: str = "",
) -> dict:
    """Run the label step for one generator; write manifest, duplicates and a summary."""
    manifest, dups = build_manifest(
        processed_dir, dataset, generator, label, fractions, object_class, split_salt
    )
    write_parquet(manifest_path, manifest)
    write_parquet(duplicates_path, dups)
    summary = {
        "dataset": dataset,
        "generator": generator,
        "rows": int(len(manifest)),
        "splits": {s: int((manifest["split"] == s).sum()) for s in (*SPLITS, "unused")},
        **(
            {"folds": [int((manifest["fold"] == f).sum()) for f in range(kfold_k(fractions))]}
            if "fold" in manifest
            else {}
        ),  # fmt: skip
        "exact_duplicates": int((dups["kind"].str.startswith("exact")).sum()),
        "cross_split_duplicates": int((dups["kind"].str.startswith("same")).sum()),
    }
    write_json(Path(manifest_path).with_suffix(".summary.json"), summary)
    if summary["exact_duplicates"] or summary["cross_split_duplicates"]:
        log.warning("%s/%s duplicates: %s (see %s)", dataset, generator, summary, duplicates_path)
    want = fractions.get("test_per_generator")
    if want and summary["splits"]["test"] < want:
        log.warning("%s/%s: only %d images for test_per_generator %d (all of them are test images)",
                    dataset, generator, summary["splits"]["test"], want)  # fmt: skip
    log.info("%s/%s manifest: %s", dataset, generator, summary)
    return summary


def read_manifests(paths: list[str | Path]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
