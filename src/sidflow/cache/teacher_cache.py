"""Teacher cache step: score every manifest row once per teacher, store it in Parquet.

Output ``results/cache/<teacher>/<dataset>/<generator>.parquet``, one row per
manifest row: ``image_id``, ``logit_real``, ``logit_fake``, ``p_fake``,
``caption``, ``caption_class`` (``real``/``fake``/``other``), ``embedding``
(fixed-size list of float32), ``teacher``, ``teacher_hash`` (content hash of the
checkpoint), ``preprocess`` and ``code_version``.

Incremental and resumable: computed rows live in an append-only store
``results/cache/.store/<teacher>-<hash12>/<dataset>/<generator>/chunk-*.parquet``
that Snakemake does not own (it deletes a job's outputs before rerunning it).
Adding images computes only the new rows; a changed teacher has a new hash and
so a new store; a killed run keeps every finished chunk.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch

import sidflow
from sidflow.cache.store import ChunkStore, fill_store
from sidflow.data.loading import load_images, to_tensor
from sidflow.devices import autocast, select_device
from sidflow.io import read_json, write_parquet
from sidflow.models.teachers import load_teacher

log = logging.getLogger(__name__)


def cache_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("image_id", pa.string()),
            ("logit_real", pa.float32()),
            ("logit_fake", pa.float32()),
            ("p_fake", pa.float32()),
            ("caption", pa.string()),
            ("caption_class", pa.string()),
            ("embedding", pa.list_(pa.float32(), dim)),
            ("teacher", pa.string()),
            ("teacher_hash", pa.string()),
            ("preprocess", pa.string()),
            ("code_version", pa.string()),
        ]
    )


def store_dir(
    cache_root: Path, teacher: str, teacher_hash: str, dataset: str, generator: str
) -> Path:
    return Path(cache_root) / ".store" / f"{teacher}-{teacher_hash[:12]}" / dataset / generator


def build_teacher_cache(
    teacher_dir: str | Path,
    manifest: str | Path,
    processed_dir: str | Path,
    out_path: str | Path,
    preprocess_tag: str,
    cache_root: str | Path = "results/cache",
    batch_size: int = 128,
    chunk_rows: int = 4096,
    device: str = "auto",
) -> dict:
    """Run the teacher_cache step for one (teacher, dataset, generator)."""
    card = read_json(Path(teacher_dir) / "card.json")
    teacher_name, teacher_hash = card["teacher"], card["checkpoint_hash"]
    man = pd.read_parquet(manifest)
    dataset, generator = man["dataset"].iloc[0], man["generator"].iloc[0]
    store = ChunkStore(store_dir(Path(cache_root), teacher_name, teacher_hash, dataset, generator))
    have = store.done_ids()
    todo_ids = [i for i in man["image_id"] if i not in have]
    log.info(
        "%s on %s/%s: %d rows cached, %d to compute",
        teacher_name,
        dataset,
        generator,
        len(have),
        len(todo_ids),
    )
    if todo_ids:
        dev = select_device(device)
        teacher = load_teacher(teacher_dir)
        teacher.model.to(dev).eval()
        images = load_images([man[man["image_id"].isin(set(todo_ids))]], [processed_dir])

        def compute(chunk: pd.DataFrame) -> pd.DataFrame:
            rows = _score_rows(teacher, chunk, batch_size, dev)
            return rows.assign(teacher=teacher_name, teacher_hash=teacher_hash, preprocess=preprocess_tag,
                               code_version=sidflow.__version__)  # fmt: skip

        fill_store(store, images, compute, _schema_of, chunk_rows, log)
    done = store.read()
    out = man[["image_id"]].merge(done, on="image_id", how="left", validate="one_to_one")
    if out["p_fake"].isna().any():
        raise RuntimeError(
            f"{out_path}: {int(out['p_fake'].isna().sum())} manifest rows missing from the cache"
        )
    write_parquet(out_path, out, _schema_of(out))
    counts = out["caption_class"].value_counts().to_dict()
    summary = {
        "teacher": teacher_name,
        "rows": int(len(out)),
        "computed": len(todo_ids),
        "caption_classes": counts,
    }
    if counts.get("other"):
        log.warning(
            "%s: %d greedy captions name neither class (kept as 'other')", out_path, counts["other"]
        )
    return summary


def _schema_of(rows: pd.DataFrame) -> pa.Schema:
    return cache_schema(len(rows["embedding"].iloc[0]))


@torch.no_grad()
def _score_rows(teacher, images: pd.DataFrame, batch_size: int, device) -> pd.DataFrame:
    out = []
    for lo in range(0, len(images), batch_size):
        part = images.iloc[lo : lo + batch_size]
        x = to_tensor(part["jpeg"].tolist(), teacher.image_mean, teacher.image_std).to(device)
        with autocast(device):
            res = teacher.score(x)
        logits = res["logits"].cpu().numpy()
        out.append(
            pd.DataFrame(
                {
                    "image_id": part["image_id"].to_numpy(),
                    "logit_real": logits[:, 0],
                    "logit_fake": logits[:, 1],
                    "p_fake": res["p_fake"].cpu().numpy(),
                    "caption": res["captions"],
                    "caption_class": [
                        teacher.caption_to_class(c) or "other" for c in res["captions"]
                    ],
                    "embedding": list(res["embedding"].cpu().numpy().astype("float32")),
                }
            )
        )
    return pd.concat(out, ignore_index=True)


def read_cache(paths: list[str | Path], columns: list[str] | None = None) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p, columns=columns) for p in paths], ignore_index=True)
