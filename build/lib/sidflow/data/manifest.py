"""Label step: one manifest per (dataset, generator).

A manifest row: ``image_id`` (sha256 of the source bytes, the key everywhere),
``dataset``, ``generator``, ``label`` (0 real, 1 fake), ``split``,
``object_class`` (when the source encodes one), ``source_path``, ``pixel_sha256``.

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

from sidflow.data.preprocess import part_files
from sidflow.io import write_json, write_parquet

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LABELS = {"real": 0, "fake": 1}


def assign_split(image_id: str, fractions: dict[str, float], salt: str = "") -> str:
    """Map a hash to a split with the given fractions (train/val/test), stable forever."""
    import hashlib

    digest = hashlib.sha256((salt + image_id).encode()).digest() if salt else bytes.fromhex(image_id[:16])
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for split in SPLITS:
        edge += fractions[split]
        if u < edge:
            return split
    return SPLITS[-1]


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
            raise ValueError(f"{source_path}: object class {value} is outside the {len(names)} names")
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
        raise ValueError(f"{dataset}/{generator}: label must be one of {sorted(LABELS)}, got {label!r}")
    dup_mask = df.duplicated("image_id", keep="first")
    exact = df[dup_mask].assign(kind="exact duplicate of an earlier file")
    df = df[~dup_mask].reset_index(drop=True)
    df.insert(1, "dataset", dataset)
    df.insert(2, "generator", generator)
    df.insert(3, "label", LABELS[label])
    df.insert(4, "split", [assign_split(i, fractions, split_salt) for i in df["image_id"]])
    df.insert(5, "object_class", [parse_object_class(p, object_class) for p in df["source_path"]])
    by_pixels = df.groupby("pixel_sha256")["split"].nunique()
    cross = df[df["pixel_sha256"].isin(by_pixels[by_pixels > 1].index)].assign(
        kind="same processed image in several splits"
    )
    dups = pd.concat([exact, cross], ignore_index=True)[["image_id", "source_path", "pixel_sha256", "kind"]]
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
    manifest, dups = build_manifest(processed_dir, dataset, generator, label, fractions, object_class, split_salt)
    write_parquet(manifest_path, manifest)
    write_parquet(duplicates_path, dups)
    summary = {
        "dataset": dataset,
        "generator": generator,
        "rows": int(len(manifest)),
        "splits": {s: int((manifest["split"] == s).sum()) for s in SPLITS},
        "exact_duplicates": int((dups["kind"].str.startswith("exact")).sum()),
        "cross_split_duplicates": int((dups["kind"].str.startswith("same")).sum()),
    }
    write_json(Path(manifest_path).with_suffix(".summary.json"), summary)
    if summary["exact_duplicates"] or summary["cross_split_duplicates"]:
        log.warning("%s/%s duplicates: %s (see %s)", dataset, generator, summary, duplicates_path)
    log.info("%s/%s manifest: %s", dataset, generator, summary)
    return summary


def read_manifests(paths: list[str | Path]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
