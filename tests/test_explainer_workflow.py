"""The explainer in the shared small run: fine-tune -> scores as a detector -> VQA
before/after (beside the published answers, whose figures it reproduces) -> report."""

import json

import pandas as pd
import pytest

pytestmark = pytest.mark.workflow


def test_explainer_is_scored_like_every_detector(small_run):
    exp = small_run / "results/smoke"
    for gen in ("real", "ae-deconv", "ae-bilinear", "dcgan-face"):
        for view in ("none", "jpeg75", "combo"):
            scores = pd.read_parquet(exp / f"scores/explainer/demo/{gen}/{view}.parquet")
            assert set(scores["detector"]) == {"explainer"} and scores["p_fake"].between(0, 1).all()
    m = pd.read_parquet(exp / "metrics/metrics.parquet")
    rows = m[(m["detector"] == "explainer") & (m["perturbation"] == "none")]
    assert {"real", "ae-deconv", "ae-bilinear", "dcgan-face", "pooled", "mean"} <= set(
        rows["generator"]
    )
    assert rows[["ap", "auc", "accuracy"]].notna().all().all()
    card = json.loads((exp / "models/explainer/card.json").read_text())
    # 12 training images per training generator, each explained and asked true/false
    assert card["conversations"]["by_source"]["template"] == 3 * 12 * 2 and card["split"] == "train"
    gallery = json.loads((exp / "explainer/gallery.json").read_text())
    assert gallery["source"] == "gradcam" and gallery["images"]  # the student's Grad-CAM picks
    html = (small_run / "results/report/smoke/index.html").read_text()
    assert "Explanations: the vision-language explainer" in html and 'class="explained"' in html


def test_vqa_before_after_reproduces_the_published_figures(small_run, aigen_zip):
    exp = small_run / "results/smoke"
    errors = pd.read_parquet(exp / "explainer/vqa-errors.parquet")
    overall = errors[errors["scope"] == "overall"].set_index(["kind", "model"])["error"]
    # the published model's recorded answers, scored by the same step as this run's answers
    assert overall[("multiple-choice", "published-base")] == pytest.approx(0.47)
    assert overall[("multiple-choice", "published-epoch6")] == pytest.approx(0.38)
    assert overall[("true-false", "published-base")] == pytest.approx(0.38)
    assert overall[("true-false", "published-epoch6")] == pytest.approx(0.24)
    per_gen = errors[(errors["scope"] == "generator")]
    for model in ("base", "finetuned"):
        keys = set(per_gen[(per_gen["model"] == model) & (per_gen["kind"] == "true-false")]["key"])
        assert keys == {
            "natural",
            "adm",
            "biggan",
            "glide",
            "midjourney",
            "sd1.4",
            "sd1.5",
            "vqdm",
            "wukong",
        }
    answers = pd.read_parquet(exp / "explainer/vqa-answers.parquet")
    assert answers.groupby("model").size().to_dict() == {
        "base": 150,
        "finetuned": 150,
        "published-base": 150,
        "published-epoch6": 150,
    }
    card = json.loads((exp / "models/explainer/card.json").read_text())
    assert card["conversations"]["by_source"]["shipped"] == 99
    html = (small_run / "results/report/smoke/index.html").read_text()
    assert "True/false questions" in html and "47.0% (47/100)" in html and "24.0% (12/50)" in html
