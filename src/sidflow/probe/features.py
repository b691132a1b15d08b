"""Probe feature cache: one row per (backbone, transform, image), computed once.

Rule ``probe_features`` writes ``results/features/probe/<backbone>/<transform>/<dataset>/
<generator>.parquet`` (``image_id``, ``split``, ``label``, ``features`` float32 list) for every
split. Rows live in an append-only :class:`~sidflow.cache.store.ChunkStore` keyed by the
backbone's identity (weights hash + input preparation) and the transform chain, so a second
run, a new classifier or a new reduction never recomputes a feature, and added images cost only
their rows. A teacher's clean-image embedding is read from the teacher cache, not recomputed.
Concatenated backbones are joined from their parts' files at fit time (:func:`load_features`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from sidflow.cache.store import ChunkStore, fill_store
from sidflow.data.loading import load_images
from sidflow.data.perturb import check_chain, perturbed_arrays
from sidflow.io import write_parquet

log = logging.getLogger(__name__)

COLUMNS = ["image_id", "split", "label", "dataset", "generator"]


def features_schema(dim: int) -> pa.Schema:
    return pa.schema([("image_id", pa.string()), ("features", pa.list_(pa.float32(), dim))])


def store_key(identity: str, chain: list) -> str:
    blob = json.dumps({"backbone": identity, "chain": chain}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write(out_path, man: pd.DataFrame, feats: pd.DataFrame) -> None:
    out = man[COLUMNS].merge(
        feats[["image_id", "features"]], on="image_id", how="left", validate="one_to_one"
    )
    if out["features"].isna().any():
        raise RuntimeError(
            f"{out_path}: {int(out['features'].isna().sum())} images have no features"
        )
    dim = len(out["features"].iloc[0])
    schema = pa.schema([("image_id", pa.string()), ("split", pa.string()), ("label", pa.int64()),
                        ("dataset", pa.string()), ("generator", pa.string()),
                        ("features", pa.list_(pa.float32(), dim))])  # fmt: skip
    write_parquet(out_path, out.assign(label=out["label"].astype("int64")), schema)


def compute_probe_features(
    spec: dict,
    manifest: str | Path,
    processed_dir: str | Path,
    chain: list,
    out_path: str | Path,
    cache_root: str | Path = "results/cache/probe",
    teacher_cache: str | Path | None = None,
    batch_size: int = 64,
    chunk_rows: int = 4096,
    device: str = "auto",
) -> dict:
    """Run the probe_features step for one (backbone, transform, dataset, generator)."""
    check_chain(chain)
    man = pd.read_parquet(manifest)
    if spec["arch"] == "teacher" and not chain and teacher_cache is not None:
        cached = pd.read_parquet(teacher_cache, columns=["image_id", "embedding"])
        _write(out_path, man, cached.rename(columns={"embedding": "features"}))
        log.info("%s: %d teacher embeddings read from %s", out_path, len(man), teacher_cache)
        return {"rows": len(man), "computed": 0, "source": str(teacher_cache)}

    from sidflow.probe.backbones import create_backbone

    backbone = create_backbone(spec, device)
    dataset, generator = man["dataset"].iloc[0], man["generator"].iloc[0]
    store = ChunkStore(Path(cache_root) / store_key(backbone.identity, chain) / dataset / generator)
    have = store.done_ids()
    todo = man[~man["image_id"].isin(have)]
    log.info(
        "%s on %s/%s: %d rows cached, %d to compute",
        spec["arch"],
        dataset,
        generator,
        len(have),
        len(todo),
    )
    if len(todo):
        images = load_images([todo], [processed_dir])

        def compute(rows: pd.DataFrame) -> pd.DataFrame:
            feats = backbone.embed(perturbed_arrays(rows["jpeg"].tolist(), chain), batch_size)
            return pd.DataFrame({"image_id": rows["image_id"].to_numpy(), "features": list(feats)})

        fill_store(
            store,
            images,
            compute,
            lambda r: features_schema(len(r["features"].iloc[0])),
            chunk_rows,
            log,
        )
    _write(out_path, man, store.read())
    return {"rows": len(man), "computed": len(todo)}


def load_features(paths_by_part: list[list[str | Path]]) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of one or several backbones' feature files, columns joined by image_id.

    ``paths_by_part[k]`` lists the files of part k (one per generator). Returns the rows'
    ``COLUMNS`` and their N x D float32 features (parts concatenated in order).
    """
    base, blocks = None, []
    for paths in paths_by_part:
        df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
        if base is None:
            base = df[COLUMNS].reset_index(drop=True)
        else:
            df = base[["image_id"]].merge(df, on="image_id", how="left", validate="one_to_one")
            if df["features"].isna().any():
                raise ValueError("concatenated backbones cover different images")
        blocks.append(np.stack(df["features"].to_numpy()).astype(np.float32))
    return base, np.concatenate(blocks, axis=1)
