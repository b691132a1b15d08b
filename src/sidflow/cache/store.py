"""Append-only chunk stores behind every per-image cache (teacher logits, CLIP tokens).

A store is a folder of ``chunk-NNNNNN.parquet`` files keyed by the model's content
hash, outside the paths Snakemake owns (it deletes a job's outputs before rerunning
it). Finished chunks survive a killed job; adding images computes only new rows; a
changed model gets a new hash and so a new store.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from sidflow.io import write_parquet


class ChunkStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def chunks(self) -> list[Path]:
        return sorted(self.root.glob("chunk-*.parquet"))

    def read(self, columns: list[str] | None = None) -> pd.DataFrame | None:
        """Every stored row once (the first copy of an ``image_id``), or None if empty."""
        chunks = self.chunks()
        if not chunks:
            return None
        frames = [pd.read_parquet(c, columns=columns) for c in chunks]
        return pd.concat(frames, ignore_index=True).drop_duplicates("image_id")

    def done_ids(self) -> set[str]:
        done = self.read(columns=["image_id"])
        return set(done["image_id"]) if done is not None else set()

    def append(self, rows: pd.DataFrame, schema: pa.Schema) -> Path:
        """Write one chunk atomically; returns its path."""
        path = self.root / f"chunk-{len(self.chunks()):06d}.parquet"
        write_parquet(path, rows, schema)
        return path


def fill_store(store: ChunkStore, todo: pd.DataFrame, compute, schema, chunk_rows: int, log=None):
    """Compute ``compute(rows) -> DataFrame`` for ``todo`` in chunks of ``chunk_rows``,
    appending each finished chunk to ``store``. ``schema``: a Schema, or a function of
    the computed rows that returns one (when a width is only known afterwards)."""
    for lo in range(0, len(todo), chunk_rows):
        rows = compute(todo.iloc[lo : lo + chunk_rows])
        store.append(rows, schema(rows) if callable(schema) else schema)
        if log is not None:
            log.info("cached %d/%d rows", min(lo + chunk_rows, len(todo)), len(todo))
