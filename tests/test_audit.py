"""Shortcut audit: raw-file metadata, JPEG quality estimate, the metadata-only classifier."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score

from helpers import jpeg_bytes, png_bytes, rgb_array
from sidflow.audit.metadata import estimate_jpeg_quality, file_metadata, ijg_table, raw_metadata
from sidflow.audit.shortcut import DETECTOR, fit_audit, join_metadata, run_shortcut_audit
from sidflow.io import sha256_bytes


@pytest.mark.parametrize("quality", [10, 35, 50, 75, 90, 95, 100])
def test_jpeg_quality_estimate_recovers_the_encoder_setting(quality):
    buf = io.BytesIO()
    Image.fromarray(rgb_array(quality, 48)).save(buf, "JPEG", quality=quality)
    meta = file_metadata(buf.getvalue())
    assert meta["format"] == "JPEG" and meta["jpeg_quality"] == quality
    assert meta["quant_luma_mean"] == pytest.approx(ijg_table(quality).mean())
    assert meta["width"] == 48 and meta["file_bytes"] == len(buf.getvalue())


def test_jpeg_quality_estimate_rejects_a_bad_table():
    with pytest.raises(ValueError, match="64 entries"):
        estimate_jpeg_quality([1, 2, 3])


def test_png_has_no_jpeg_fields():
    meta = file_metadata(png_bytes(rgb_array(1, 24)))
    assert meta["format"] == "PNG" and meta["height"] == 24
    assert np.isnan(meta["jpeg_quality"]) and np.isnan(meta["subsampling"])


def test_raw_metadata_lists_every_file_including_unreadable_ones(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes(rgb_array(1, 16)))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jpg").write_bytes(jpeg_bytes(rgb_array(2, 24), quality=80))
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    df = raw_metadata(tmp_path).set_index("source_path")
    assert list(df.index) == ["a.png", "broken.png", "sub/b.jpg"]
    assert df.loc["broken.png", "format"] == "unreadable"
    assert df.loc["broken.png", "image_id"] == sha256_bytes(b"not an image at all")
    assert df.loc["sub/b.jpg", "jpeg_quality"] == 80


def _dataset(tmp_path, fake_fmt: str, n: int = 80):
    """Real PNGs and fakes in ``fake_fmt``; metadata + manifests keyed by image_id."""
    meta, mans = {}, {}
    for gen, label, fmt in (("real", 0, "png"), ("fake", 1, fake_fmt)):
        folder = tmp_path / gen
        folder.mkdir()
        ids = []
        for i in range(n):
            arr = np.random.default_rng(label * 1000 + i).integers(
                0, 256, (16, 16, 3), dtype=np.uint8
            )
            data = png_bytes(arr) if fmt == "png" else jpeg_bytes(arr, quality=70)
            (folder / f"{i:03d}.{fmt}").write_bytes(data)
            ids.append(sha256_bytes(data))
        splits = (["train"] * 6 + ["val"] * 2 + ["test"] * 2) * (n // 10)
        mans[f"toy/{gen}"] = pd.DataFrame({"image_id": ids, "dataset": "toy", "generator": gen, "label": label,
                                           "split": splits, "object_class": None,
                                           "source_path": [f"{i:03d}.{fmt}" for i in range(n)]})  # fmt: skip
        meta[f"toy/{gen}"] = raw_metadata(folder)
    return meta, mans


def _run(tmp_path, meta, mans):
    paths = {}
    for key in meta:
        gen = key.split("/")[1]
        meta[key].to_parquet(tmp_path / f"{gen}.meta.parquet")
        mans[key].to_parquet(tmp_path / f"{gen}.man.parquet")
        paths[key] = (str(tmp_path / f"{gen}.meta.parquet"), str(tmp_path / f"{gen}.man.parquet"))
    out = {k: str(tmp_path / "scores" / f"{k.replace('/', '-')}.parquet") for k in meta}
    summary = run_shortcut_audit({k: p[0] for k, p in paths.items()}, {k: p[1] for k, p in paths.items()},
                                 list(meta), out, tmp_path / "shortcut.json")  # fmt: skip
    scores = pd.concat([pd.read_parquet(p) for p in out.values()], ignore_index=True)
    return summary, scores


def test_audit_flags_a_format_shortcut(tmp_path):
    summary, scores = _run(tmp_path, *_dataset(tmp_path, "jpg"))
    assert set(scores["detector"]) == {DETECTOR} and set(scores["split"]) == {"val", "test"}
    assert len(scores) == 2 * 80 * 4 // 10
    test = scores[scores["split"] == "test"]
    assert average_precision_score(test["label"], test["p_fake"]) == 1.0
    assert summary["generators"]["toy/fake"]["formats"] == "JPEG 100%"
    assert summary["generators"]["toy/fake"]["median_jpeg_quality"] == 70


def test_audit_is_at_chance_when_metadata_is_identical(tmp_path):
    _, scores = _run(tmp_path, *_dataset(tmp_path, "png"))
    test = scores[scores["split"] == "test"]
    # same format, size, and (incompressible noise) file size: nothing to learn
    assert test["p_fake"].nunique() == 1
    assert average_precision_score(test["label"], test["p_fake"]) == pytest.approx(0.5)


def test_join_names_manifest_rows_without_metadata(tmp_path):
    meta, mans = _dataset(tmp_path, "png", n=10)
    with pytest.raises(ValueError, match="no raw metadata"):
        join_metadata(meta["toy/real"].iloc[1:], mans["toy/real"])


def test_audit_needs_both_classes(tmp_path):
    meta, mans = _dataset(tmp_path, "png", n=10)
    train = join_metadata(meta["toy/real"], mans["toy/real"])
    with pytest.raises(ValueError, match="real and fake"):
        fit_audit(train)
