"""Scores tables written from a teacher's cache: the likelihood detector and the caption
detector (the same teacher judged by its generated caption)."""

import pandas as pd
import pytest

from sidflow.evaluate.metrics import evaluate_scores
from sidflow.evaluate.scores import score_teacher_from_cache


def _manifest_and_cache(tmp_path):
    ids = [f"i{k}" for k in range(8)]
    man = pd.DataFrame({"image_id": ids, "dataset": "d", "generator": ["real"] * 4 + ["gan"] * 4,
                        "split": ["val", "test", "test", "train", "val", "test", "test", "test"],
                        "label": [0] * 4 + [1] * 4})  # fmt: skip
    cache = pd.DataFrame({"image_id": ids, "p_fake": [0.1, 0.2, 0.6, 0.3, 0.9, 0.8, 0.7, 0.4],
                          "caption_class": ["real", "real", "other", "real", "fake", "fake", "real", "oops"]})  # fmt: skip
    man.to_parquet(tmp_path / "m.parquet")
    cache.to_parquet(tmp_path / "c.parquet")
    return man, cache


def test_teacher_scores_and_caption_verdicts_from_one_cache(tmp_path):
    _manifest_and_cache(tmp_path)
    n = score_teacher_from_cache(tmp_path / "c.parquet", tmp_path / "m.parquet", "teacher-t",
                                 tmp_path / "s.parquet", "teacher-t-caption", tmp_path / "cap.parquet")  # fmt: skip
    plain, cap = pd.read_parquet(tmp_path / "s.parquet"), pd.read_parquet(tmp_path / "cap.parquet")
    assert n == len(plain) == len(cap) == 7  # the train row is not scored
    assert plain["verdict"].isna().all() and set(cap["detector"]) == {"teacher-t-caption"}
    # an unknown caption class is "other"; p_fake (for AP/AUC) is the likelihood score
    assert cap.set_index("image_id")["verdict"].to_dict() == {
        "i0": "real", "i1": "real", "i2": "other", "i4": "fake", "i5": "fake", "i6": "real", "i7": "other"
    }  # fmt: skip
    assert cap["p_fake"].tolist() == plain["p_fake"].tolist()
    t = evaluate_scores(pd.concat([plain, cap]), ["d/real", "d/gan"])
    row = t[(t["detector"] == "teacher-t-caption") & (t["generator"] == "all")].iloc[0]
    # test: reals i1 (real, right) i2 (other, wrong); fakes i5 (right) i6 (real, wrong) i7 (other)
    assert row["accuracy"] == pytest.approx(2 / 5) and row["other"] == 2
    assert row["real_accuracy"] == pytest.approx(1 / 2) and row["fake_accuracy"] == pytest.approx(
        1 / 3
    )
    assert pd.isna(row["threshold"])
    lik = t[(t["detector"] == "teacher-t") & (t["generator"] == "all")].iloc[0]
    assert row["ap"] == pytest.approx(lik["ap"])  # same ranking score, same AP


def test_uncached_rows_are_an_error_naming_the_cache(tmp_path):
    _, cache = _manifest_and_cache(tmp_path)
    cache.iloc[:5].to_parquet(tmp_path / "c.parquet")
    with pytest.raises(ValueError, match="c.parquet: 3 rows .* are not cached"):
        score_teacher_from_cache(tmp_path / "c.parquet", tmp_path / "m.parquet", "teacher-t",
                                 tmp_path / "s.parquet")  # fmt: skip
