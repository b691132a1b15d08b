"""Probe feature cache: one row per (backbone, transform, image), computed once.

Rule ``probe_features`` writes ``results/features/probe/<backbone>/<transform>/<dataset>/
<generator>.parquet`` (``image_id``, ``split``, ``label``, ``dataset``, ``generator``,
``features`` float32 list) for every split. Rows live in an append-only
:class:`~sidflow.cache.store.ChunkStore` ``<cache_root>/<key16>/<dataset>/<generator>/`` (the
rule passes ``cache_root``: ``results/cache/probe``) keyed by the backbone's identity (weights
hash + input preparation) and the transform chain, so a second run, a new classifier or a new
reduction never recomputes a feature, and added images cost only their rows
(:func:`sidflow.cache.store.cached_rows`). A teacher's clean-image embedding is read from the
teacher cache, not recomputed. Concatenated backbones are joined from their parts' files at fit
time (:func:`load_features`).

Tests: ``python -m pytest -q -p no:cacheprovider tests/test_probe.py -k feature``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from sidflow.cache.store import cached_rows, join_rows, open_store
from sidflow.data.perturb import check_chain, perturbed_arrays
from sidflow.io import write_parquet
from sidflow.tables import feature_schema, list_width

log = logging.getLogger(__name__)

COLUMNS = ["image_id", "split", "label", "dataset", "generator"]


def store_key(identity: str, chain: list) -> str:
    blob = json.dumps({"backbone": identity, "chain": chain}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def compute_probe_features(
    spec: dict,
    manifest: str | Path,
    processed_dir: str | Path,
    chain: list,
    out_path: str | Path,
    cache_root: str | Path,
    teacher_cache: str | Path | None = None,
    batch_size: int = 64,
    chunk_rows: int = 4096,
    device: str = "auto",
) -> dict:
    """Run the probe_features step for one (backbone, transform, dataset, generator);
    ``cache_root``: the folder of the stores (the rule's ``params.cache_root``)."""
    check_chain(chain)
    if spec["arch"] == "teacher" and not chain and teacher_cache is not None:
        cached = pd.read_parquet(teacher_cache, columns=["image_id", "embedding"])
        man = pd.read_parquet(manifest)[COLUMNS]
        feats = cached.rename(columns={"embedding": "features"})
        _write(out_path, join_rows(man, feats, teacher_cache))
        log.info("%s: %d teacher embeddings read from %s", out_path, len(man), teacher_cache)
        return {"rows": len(man), "computed": 0, "source": str(teacher_cache)}

    from sidflow.probe.backbones import create_backbone

    backbone = create_backbone(spec, device)
    man, store = open_store(manifest, cache_root, store_key(backbone.identity, chain))

    def compute(rows: pd.DataFrame) -> pd.DataFrame:
        feats = backbone.embed(perturbed_arrays(rows["jpeg"].tolist(), chain), batch_size)
        return pd.DataFrame({"image_id": rows["image_id"].to_numpy(), "features": list(feats)})

    out, computed = cached_rows(
        store, man[COLUMNS], compute, _chunk_schema, chunk_rows, processed_dir
    )
    _write(out_path, out)
    return {"rows": len(man), "computed": computed}


def _chunk_schema(rows: pd.DataFrame):
    return feature_schema(list_width(rows, "features"))


def _write(out_path: str | Path, out: pd.DataFrame) -> None:
    schema = feature_schema(list_width(out, "features"), rows=True)
    write_parquet(out_path, out.assign(label=out["label"].astype("int64")), schema)


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
