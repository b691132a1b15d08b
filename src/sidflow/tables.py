"""The Parquet tables every layer shares: one public home for their schemas and builders.

* scores (:data:`SCORES_SCHEMA`, :func:`scores_table`): what every detector writes and the only
  thing evaluation reads, ``results/<experiment>/scores/<detector>/<dataset>/<generator>/<perturbation>.parquet``;
* processed shards and quarantine: :data:`sidflow.data.preprocess.PART_SCHEMA` / ``QUARANTINE_SCHEMA``
  (re-exported here);
* caches: :func:`teacher_cache_schema` (teacher logits, caption, embedding) and
  :func:`token_schema` / :func:`feature_schema` (CLIP block tokens, probe features).
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

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
    ]
)


def scores_table(
    man: pd.DataFrame, p_fake, detector: str, perturbation: str, object_pred=None
) -> pd.DataFrame:
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
        }
    )
