"""Label: hash-stable splits, object classes, duplicates reported."""

import shutil

import pandas as pd
import pytest

from helpers import write_images
from sidflow.data.manifest import (
    assign_split,
    assign_splits,
    build_manifest,
    label_generator,
    parse_object_class,
)
from sidflow.data.preprocess import PreprocessParams, preprocess_generator

FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
CIFAKE_CLASSES = {"pattern": r"\((?P<cls>\d+)\)\.\w+$", "default": 1, "index_base": 1,
                  "names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}  # fmt: skip


def processed(tmp_path, raw):
    out = tmp_path / f"proc-{len(list(tmp_path.iterdir()))}"
    preprocess_generator(raw, out, PreprocessParams(image_size=16))
    return out


def test_split_fractions_and_determinism():
    import hashlib

    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)]
    splits = pd.Series([assign_split(i, FRACTIONS) for i in ids])
    freq = splits.value_counts(normalize=True)
    for s, f in FRACTIONS.items():
        assert abs(freq[s] - f) < 0.015
    assert [assign_split(i, FRACTIONS) for i in ids[:100]] == splits[:100].tolist()


def test_fixed_counts_per_generator_are_exact_and_stable_when_images_are_added():
    import hashlib

    ids = [hashlib.sha256(f"a{i}".encode()).hexdigest() for i in range(1000)]
    fixed = {**FRACTIONS, "test_per_generator": 100, "train_per_generator": 600}
    first = assign_splits(ids, fixed)
    counts = pd.Series(first).value_counts()
    assert counts["test"] == 100 and counts["train"] == 600
    assert counts["val"] + counts.get("unused", 0) == 300
    assert (
        0.08 < counts["val"] / 900 < 0.17
    )  # val:train ratio of the fractions (1:7) before the cap
    # the test images are those of lowest hash
    lowest = sorted(ids, key=lambda i: int(i[:16], 16))[:100]
    assert {i for i, s in zip(ids, first, strict=True) if s == "test"} == set(lowest)
    # 50 images added: an old image changes split only when a new one displaces it
    new = [hashlib.sha256(f"b{i}".encode()).hexdigest() for i in range(50)]
    again = dict(zip(ids + new, assign_splits(ids + new, fixed), strict=True))
    assert pd.Series(list(again.values())).value_counts()[["test", "train"]].tolist() == [100, 600]
    moved = [i for i, s in zip(ids, first, strict=True) if again[i] != s]
    new_test = sum(again[i] == "test" for i in new)
    new_train = sum(again[i] == "train" for i in new)
    # each move is a displacement: a new test image pushes the last test image out (to train
    # or val), which may push the last training image to unused; a new training image pushes one
    assert 0 < len(moved) <= 2 * new_test + new_train
    assert {again[i] for i in moved} <= {"train", "val", "unused"}
    assert all(again[i] == s for i, s in zip(ids, first, strict=True) if s == "val")
    # without counts: the fractions, as before
    assert assign_splits(ids[:50], FRACTIONS) == [assign_split(i, FRACTIONS) for i in ids[:50]]


def test_splits_stable_when_images_are_added(tmp_path):
    raw = tmp_path / "raw"
    write_images(raw, 30)
    before, _ = build_manifest(processed(tmp_path, raw), "d", "g", "fake", FRACTIONS)
    write_images(raw, 30, seed=7)
    after, _ = build_manifest(processed(tmp_path, raw), "d", "g", "fake", FRACTIONS)
    assert len(after) == 60
    merged = before.merge(after, on="image_id", suffixes=("_b", "_a"))
    assert len(merged) == 30 and (merged["split_b"] == merged["split_a"]).all()
    assert set(after["label"]) == {1} and set(after["generator"]) == {"g"}


def test_exact_duplicates_reported_not_silently_dropped(tmp_path):
    raw = tmp_path / "raw"
    paths = write_images(raw, 5)
    shutil.copy(paths[0], raw / "copy_of_first.png")
    man_path, dup_path = tmp_path / "m.parquet", tmp_path / "d.parquet"
    s = label_generator(processed(tmp_path, raw), man_path, dup_path, "d", "g", "real", FRACTIONS)
    assert s["rows"] == 5 and s["exact_duplicates"] == 1
    dups = pd.read_parquet(dup_path)
    assert dups["source_path"].tolist() == ["img_0_0000.png"] or dups["source_path"].tolist() == [
        "copy_of_first.png"
    ]
    assert pd.read_parquet(man_path)["image_id"].is_unique


def test_cross_split_pixel_duplicates_reported(tmp_path):
    from PIL import Image

    raw = tmp_path / "raw"
    raw.mkdir()
    img = Image.new("RGB", (32, 32), (10, 200, 30))
    for i in range(40):  # same pixels, different bytes (PNG metadata differs)
        info = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
        info.add_text("n", str(i))
        img.save(raw / f"same_{i}.png", pnginfo=info)
    man, dups = build_manifest(processed(tmp_path, raw), "d", "g", "real", FRACTIONS)
    assert man["split"].nunique() > 1
    assert (dups["kind"] == "same processed image in several splits").sum() == 40


@pytest.mark.parametrize(
    ("name", "cls"),
    [("0001.jpg", "airplane"), ("0001 (2).jpg", "automobile"), ("4499 (10).jpg", "truck")],
)
def test_cifake_object_class_from_file_name(name, cls):
    assert parse_object_class(name, CIFAKE_CLASSES) == cls


def test_object_class_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        parse_object_class("1 (11).jpg", CIFAKE_CLASSES)


def test_unknown_label_rejected(tmp_path):
    raw = tmp_path / "raw"
    write_images(raw, 2)
    with pytest.raises(ValueError, match="label must be"):
        build_manifest(processed(tmp_path, raw), "d", "g", "synthetic", FRACTIONS)
