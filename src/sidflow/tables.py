"""The Parquet tables every layer shares: one public home for their schemas and builders.

* scores (:data:`SCORES_SCHEMA`, :func:`scores_table`): what every detector writes and the only
  thing evaluation reads, ``results/<experiment>/scores/<detector>/<dataset>/<generator>/<perturbation>.parquet``;
* processed shards and quarantine: :data:`PART_SCHEMA` / :data:`QUARANTINE_SCHEMA`
  (``data/processed/<dataset>/<generator>/part-*.parquet``, ``quarantine.parquet``);
* caches: :func:`teacher_cache_schema` (teacher logits, caption, embedding) and
  :func:`token_schema` / :func:`feature_schema` (CLIP block tokens, probe features).
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

PART_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("source_path", pa.string()),
        ("source_format", pa.string()),
        ("source_mode", pa.string()),
        ("source_width", pa.int32()),
        ("source_height", pa.int32()),
        ("source_bytes", pa.int64()),
        ("conversion", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        (
            "jpeg",
            pa.binary(),
        ),  # the processed image's bytes (JPEG unless preprocess.encode says otherwise)
        ("pixel_sha256", pa.string()),
        ("encoding", pa.string()),  # jpeg | png | original-<source format>
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        ("source_path", pa.string()),
        ("image_id", pa.string()),
        ("source_bytes", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)

SCORE_SPLITS = ("val", "test")
SCORES_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("detector", pa.string()),
        ("dataset", pa.string()),
        ("generator", pa.string()),
        ("split", pa.string()),
        ("label", pa.int8()),
        ("perturbation", pa.string()),
        ("p_fake", pa.float32()),
        ("object_class", pa.string()),
        ("object_pred", pa.string()),
        ("verdict", pa.string()),
        (
            "generator_pred",
            pa.string(),
        ),  # an attribution head's answer: "real" or dataset/generator
    ]
)
# dataset and generator of the metrics tables' pooled and mean-over-generators rows
POOLED, MEAN = "all", "mean"
VERDICTS = ("real", "fake", "other")  # a hard verdict column's values (null: threshold p_fake)


def scores_table(
    man: pd.DataFrame, p_fake, detector: str, perturbation: str, object_pred=None, verdict=None,
    generator_pred=None,
) -> pd.DataFrame:  # fmt: skip
    """The scores table of one detector on manifest rows ``man``. ``verdict`` (optional):
    the detector's own hard decision per image (``real``/``fake``/``other``, e.g. a generated
    caption); evaluation then scores accuracy from it instead of thresholding ``p_fake``."""
    obj = man["object_class"] if "object_class" in man else pd.Series([None] * len(man))
    return pd.DataFrame(
        {
            "image_id": man["image_id"].to_numpy(),
            "detector": detector,
            "dataset": man["dataset"].to_numpy(),
            "generator": man["generator"].to_numpy(),
            "split": man["split"].to_numpy(),
            "label": man["label"].to_numpy().astype("int8"),
            "perturbation": perturbation,
            "p_fake": pd.Series(p_fake).to_numpy().astype("float32"),
            "object_class": obj.astype(object).where(obj.notna(), None).to_numpy(),
            "object_pred": object_pred if object_pred is not None else [None] * len(man),
            "verdict": verdict if verdict is not None else [None] * len(man),
            "generator_pred": generator_pred if generator_pred is not None else [None] * len(man),
        }
    )


def float_list(dim: int | None) -> pa.DataType:
    """Fixed-width float32 list; variable-width when ``dim`` is None (an empty table's)."""
    return pa.list_(pa.float32(), -1 if dim is None else dim)


def list_width(rows: pd.DataFrame, column: str) -> int | None:
    """Width of the list in ``column`` (first row), or None when there are no rows."""
    return len(rows[column].iloc[0]) if len(rows) else None


def teacher_cache_schema(dim: int | None) -> pa.Schema:
    """``results/cache/<teacher>/<dataset>/<generator>.parquet`` and its store's chunks."""
    return pa.schema(
        [
            ("image_id", pa.string()),
            ("logit_real", pa.float32()),
            ("logit_fake", pa.float32()),
            ("p_fake", pa.float32()),
            ("caption", pa.string()),
            ("caption_class", pa.string()),
            ("embedding", float_list(dim)),
            ("teacher", pa.string()),
            ("teacher_hash", pa.string()),
            ("preprocess", pa.string()),
            ("code_version", pa.string()),
        ]
    )


def token_schema(n_blocks: int, dim: int, backbone_hash: str, n_crops: int = 1) -> pa.Schema:
    """``results/features/clip/...`` CLS tokens (``n_crops * n_blocks * dim``, row-major; several
    crops with test-time ten-crop) and chunks."""
    meta = {"n_blocks": str(n_blocks), "dim": str(dim), "backbone_hash": backbone_hash}
    if n_crops > 1:
        meta["n_crops"] = str(n_crops)
    return pa.schema(
        [
            ("image_id", pa.string()),
            ("tokens", float_list(n_crops * n_blocks * dim)),
            ("view", pa.string()),
            ("code_version", pa.string()),
        ],
        metadata=meta,
    )


def feature_schema(dim: int | None, rows: bool = False) -> pa.Schema:
    """Probe features: a store chunk (``image_id``, ``features``), or with ``rows`` the
    ``results/features/probe/...`` file that also carries the manifest's columns."""
    info = [("split", pa.string()), ("label", pa.int64()), ("dataset", pa.string()),
            ("generator", pa.string())] if rows else []  # fmt: skip
    return pa.schema([("image_id", pa.string()), *info, ("features", float_list(dim))])
