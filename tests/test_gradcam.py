"""Grad-CAM gallery: seeded picks, pictures written by the grad-cam package, report section."""

from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from sidflow.evaluate.gradcam import gradcam_gallery, pick_examples, target_layer
from sidflow.models.student import StudentConfig, create_student, save_student
from sidflow.report.sections import gradcam_section


def _scores(manifests):
    man = pd.concat([pd.read_parquet(m) for m in manifests], ignore_index=True)
    man = man[man["split"].isin(["val", "test"])].reset_index(drop=True)
    # a fixed, imperfect scorer: right on even rows, wrong on odd ones
    p = [
        (0.9 if lab else 0.1) if i % 2 == 0 else (0.1 if lab else 0.9)
        for i, lab in enumerate(man["label"])
    ]
    return man.assign(detector="student-x", perturbation="none", p_fake=p, object_pred=None)


def test_pick_examples_is_seeded_and_balanced(tiny_dataset):
    scores = _scores(tiny_dataset["manifests"])
    a = pick_examples(scores, 0.5, per_group=3, seed=7)
    b = pick_examples(scores.sample(frac=1.0, random_state=1), 0.5, per_group=3, seed=7)
    assert list(a["image_id"]) == list(b["image_id"])  # file order does not matter
    counts = a.groupby(["generator", "correct"]).size()
    assert set(counts.index) == {("fake", True), ("fake", False), ("real", True), ("real", False)}
    assert (counts <= 3).all() and (a["split"] == "test").all()
    assert ((a["pred"] == a["label"]) == a["correct"]).all()


def test_gallery_pictures_and_report(tiny_dataset, tmp_path):
    cfg = StudentConfig(image_size=32)
    model_dir = tmp_path / "student-x"
    save_student(
        create_student("resnet18", cfg), {"student": asdict(cfg), "threshold": 0.5}, model_dir
    )
    scores_path = tmp_path / "scores.parquet"
    _scores(tiny_dataset["manifests"]).to_parquet(scores_path)
    out = tmp_path / "gradcam" / "student-x"
    records = gradcam_gallery(model_dir, tiny_dataset["manifests"], tiny_dataset["processed"], [str(scores_path)],
                              out, per_group=2, layer="layer3", size=64)  # fmt: skip
    assert len(records) == 8  # 2 generators x correct/wrong x 2
    for r in records:
        img = Image.open(out / r["file"])
        assert img.size == (128, 64)
        assert r["correct"] == (r["pred"] == r["label"])
    html = gradcam_section([str(out)])
    assert html.count("data:image/png;base64,") == 8 and "toy/fake: wrong" in html


def test_gallery_rejects_an_unknown_layer():
    with pytest.raises(ValueError, match="layer1..layer4"):
        target_layer(create_student("resnet18", StudentConfig()), "fc")


def test_gallery_with_nothing_to_explain(tiny_dataset, tmp_path):
    cfg = StudentConfig(image_size=32)
    save_student(
        create_student("resnet18", cfg), {"student": asdict(cfg), "threshold": 0.5}, tmp_path / "m"
    )
    empty = _scores(tiny_dataset["manifests"]).query("split == 'val'")
    empty.to_parquet(tmp_path / "s.parquet")
    assert gradcam_gallery(tmp_path / "m", tiny_dataset["manifests"], tiny_dataset["processed"],
                           [str(tmp_path / "s.parquet")], tmp_path / "g") == []  # fmt: skip
    assert "No test predictions" in gradcam_section([str(Path(tmp_path / "g"))])
