"""Append-only chunk stores behind every per-image cache, and the one cached-feature step.

A store is a folder of ``chunk-NNNNNN.parquet`` files at
``<cache_root>/<model key>/<dataset>/<generator>[/<variant>]`` (:func:`open_store`), where
``cache_root`` comes from the rule's ``params`` and the model key is a content hash, outside
the paths Snakemake owns (it deletes a job's outputs before rerunning it). Finished chunks
survive a killed job; adding images computes only new rows; a changed model gets a new hash
and so a new store. :func:`cached_rows` is the step every cache runs (teacher logits, CLIP
tokens, probe features): done ids, rows still to compute, fill the store in chunks, read it
back, join on the manifest in its order, check that every row is there.

Tests: ``python -m pytest -q -p no:cacheprovider tests/test_teacher.py -k cached_rows``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa

from sidflow.data.loading import load_images
from sidflow.io import write_parquet

log = logging.getLogger(__name__)


class ChunkStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def chunks(self) -> list[Path]:
        return sorted(self.root.glob("chunk-*.parquet"))

    def read(self, columns: list[str] | None = None) -> pd.DataFrame | None:
        """Every stored row once (the first copy of an ``image_id``), or None if empty."""
        frames = []
        for chunk in self.chunks():
            try:
                frames.append(pd.read_parquet(chunk, columns=columns))
            except Exception as exc:  # noqa: BLE001 - garbage on disk costs a recompute, not the run
                bad = chunk.with_name(chunk.name + ".corrupt")
                log.warning("%s: unreadable cache chunk (%s: %s); moved to %s, its rows are computed again",
                            chunk, type(exc).__name__, exc, bad.name)  # fmt: skip
                chunk.replace(bad)
        if not frames:
            return None
        return pd.concat(frames, ignore_index=True).drop_duplicates("image_id")

    def done_ids(self) -> set[str]:
        done = self.read(columns=["image_id"])
        return set(done["image_id"]) if done is not None else set()

    def append(self, rows: pd.DataFrame, schema: pa.Schema) -> Path:
        """Write one chunk atomically; returns its path."""
        taken = [int(p.name[6:12]) for p in self.root.glob("chunk-*") if p.name[6:12].isdigit()]
        path = self.root / f"chunk-{max(taken, default=-1) + 1:06d}.parquet"  # never a used name
        write_parquet(path, rows, schema)
        return path


def open_store(
    manifest: str | Path, cache_root: str | Path, key: str, *variant: str
) -> tuple[pd.DataFrame, ChunkStore]:
    """``(manifest rows, store)``: read a manifest ``.../<dataset>/<generator>.parquet`` and
    open its store ``<cache_root>/<key>/<dataset>/<generator>[/<variant>]`` (the names come
    from its rows, or from its path when it is empty)."""
    man = pd.read_parquet(manifest)
    if len(man):
        dataset, generator = man["dataset"].iloc[0], man["generator"].iloc[0]
    else:
        dataset, generator = Path(manifest).parent.name, Path(manifest).stem
    return man, ChunkStore(Path(cache_root, key, dataset, generator, *variant))


def fill_store(store: ChunkStore, todo: pd.DataFrame, compute, schema, chunk_rows: int, log=log):
    """Compute ``compute(rows) -> DataFrame`` for ``todo`` in chunks of ``chunk_rows``,
    appending each finished chunk to ``store``. ``schema``: a Schema, or a function of
    the computed rows that returns one (when a width is only known afterwards)."""
    for lo in range(0, len(todo), chunk_rows):
        rows = compute(todo.iloc[lo : lo + chunk_rows])
        store.append(rows, schema(rows) if callable(schema) else schema)
        if log is not None:
            log.info("cached %d/%d rows", min(lo + chunk_rows, len(todo)), len(todo))


def join_rows(manifest: pd.DataFrame, rows: pd.DataFrame, source) -> pd.DataFrame:
    """``manifest`` (its columns, in its order) left-joined with ``rows`` on ``image_id``;
    raises naming ``source`` (the store or file ``rows`` came from) if any image is missing."""
    out = manifest.merge(rows, on="image_id", how="left", validate="one_to_one")
    missing = ~manifest["image_id"].isin(rows["image_id"]).to_numpy()
    if missing.any():
        first = manifest["image_id"].to_numpy()[missing][0]
        raise RuntimeError(
            f"{source}: {int(missing.sum())} of {len(manifest)} manifest rows missing "
            f"(first: {first})"
        )
    return out


def cached_rows(
    store: ChunkStore,
    manifest: pd.DataFrame,
    compute,
    schema,
    chunk_rows: int,
    processed_dir: str | Path | None = None,
) -> tuple[pd.DataFrame, int]:
    """The stored rows of every ``manifest`` image, computing only those not stored yet.

    ``manifest``: the columns to keep, ``image_id`` first. ``compute(rows) -> DataFrame``
    (``image_id`` + the stored columns) is called on chunks of at most ``chunk_rows``
    missing manifest rows, with their ``jpeg`` bytes when ``processed_dir`` is given, and
    not at all when nothing is missing. ``schema``: as for :func:`fill_store`; a function
    is also called on an empty frame when there are no rows at all.

    Returns ``(table, computed)``: the manifest's columns joined with the stored ones, one
    row per manifest row in its order (empty, with every column, for an empty manifest),
    and how many rows were computed. The caller writes the table.
    """
    have = store.done_ids()
    todo = manifest[~manifest["image_id"].isin(have)]
    log.info("%s: %d rows cached, %d to compute", store.root, len(have), len(todo))
    if len(todo):
        rows = load_images([todo], [processed_dir]) if processed_dir is not None else todo
        fill_store(store, rows, compute, schema, chunk_rows)
    if not len(manifest):  # no rows to join: the manifest's columns and the stored ones
        empty = (schema(pd.DataFrame()) if callable(schema) else schema).empty_table()
        stored = empty.to_pandas().drop(columns="image_id")
        return pd.concat([manifest.reset_index(drop=True), stored], axis=1), 0
    return join_rows(manifest, store.read(), store.root), len(todo)
