"""Teacher cache step: score every manifest row once per teacher, store it in Parquet.

Output ``results/cache/<teacher>/<dataset>/<generator>.parquet``, one row per
manifest row: ``image_id``, ``logit_real``, ``logit_fake``, ``p_fake``,
``caption``, ``caption_class`` (``real``/``fake``/``other``), ``embedding``
(fixed-size list of float32), ``teacher``, ``teacher_hash`` (content hash of the
checkpoint), ``preprocess`` and ``code_version``.

Incremental and resumable: computed rows live in an append-only store
``<cache_root>/<teacher>-<hash12>/<dataset>/<generator>/chunk-*.parquet`` (the rule passes
``cache_root``: ``results/cache/.store``) that Snakemake does not own (it deletes a job's
outputs before rerunning it). Adding images computes only the new rows; a changed teacher
has a new hash and so a new store; a killed run keeps every finished chunk. The step itself
is :func:`sidflow.cache.store.cached_rows`.

Run it with ``snakemake results/cache/<teacher>/<dataset>/<generator>.parquet``; tests:
``python -m pytest -q -p no:cacheprovider tests/test_pipeline_steps.py -k cache``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch

import sidflow
from sidflow.cache.store import cached_rows, open_store
from sidflow.data.loading import to_tensor
from sidflow.devices import autocast, select_device
from sidflow.io import read_json, write_parquet
from sidflow.models.teachers import load_teacher
from sidflow.tables import list_width
from sidflow.tables import teacher_cache_schema as cache_schema

log = logging.getLogger(__name__)


def build_teacher_cache(
    teacher_dir: str | Path,
    manifest: str | Path,
    processed_dir: str | Path,
    out_path: str | Path,
    preprocess_tag: str,
    cache_root: str | Path,
    batch_size: int = 128,
    chunk_rows: int = 4096,
    device: str = "auto",
) -> dict:
    """Run the teacher_cache step for one (teacher, dataset, generator); ``cache_root``: the
    folder of the stores (the rule's ``params.cache_root``)."""
    card = read_json(Path(teacher_dir) / "card.json")
    name, thash = card["teacher"], card["checkpoint_hash"]
    man, store = open_store(manifest, cache_root, f"{name}-{thash[:12]}")
    tags = {"teacher": name, "teacher_hash": thash, "preprocess": preprocess_tag,
            "code_version": sidflow.code_version()}  # fmt: skip

    @functools.cache
    def teacher():  # loaded only when a row is missing
        dev, model = select_device(device), load_teacher(teacher_dir)
        model.model.to(dev).eval()
        return model, dev

    def compute(rows: pd.DataFrame) -> pd.DataFrame:
        return _score_rows(*teacher(), rows, batch_size).assign(**tags)

    out, computed = cached_rows(
        store, man[["image_id"]], compute, _schema_of, chunk_rows, processed_dir
    )
    write_parquet(out_path, out, _schema_of(out))
    counts = out["caption_class"].value_counts().to_dict()
    if counts.get("other"):
        msg = "%s: %d greedy captions name neither class (kept as 'other')"
        log.warning(msg, out_path, counts["other"])
    return {"teacher": name, "rows": int(len(out)), "computed": computed, "caption_classes": counts}


def _schema_of(rows: pd.DataFrame) -> pa.Schema:
    return cache_schema(list_width(rows, "embedding"))


@torch.no_grad()
def _score_rows(teacher, device, images: pd.DataFrame, batch_size: int) -> pd.DataFrame:
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
