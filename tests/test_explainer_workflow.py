"""The explainer in the shared small run: fine-tune -> scores as a detector -> VQA
before/after (beside the published answers, whose figures it reproduces) -> report."""

import json
import shutil

import pandas as pd
import pytest

from helpers import AIGEN_GENERATORS, planned_jobs, run_snakemake

pytestmark = pytest.mark.workflow


def test_explainer_is_trained_explained_and_reported(small_run):
    exp = small_run / "results/smoke"
    # small.yaml turns the explainer's scores off (tests/test_explainer_steps.py scores it
    # in-process, test_the_score_explainer_rule_scores_one_generator below runs the rule):
    # no detector rows then
    m = pd.read_parquet(exp / "metrics/metrics.parquet")
    assert "explainer" not in set(m["detector"]) and not (exp / "scores/explainer").exists()
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
        assert keys == set(AIGEN_GENERATORS)
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


def test_the_score_explainer_rule_scores_one_generator(small_run, tmp_path):
    """The score_explainer rule itself (its script and wiring), one generator's job on a copy
    of the small run: its val + test images clean and its test images under each perturbation."""
    work = tmp_path / "wf"
    shutil.copytree(small_run, work, symlinks=True)  # copy2 keeps mtimes: nothing else reruns
    out = work / "results/smoke/scores/explainer/demo/ae-bilinear"
    targets = [str((out / f"{v}.parquet").relative_to(work)) for v in ("none", "jpeg75", "combo")]
    plan = run_snakemake(work, *targets, "-n", "--configfile", "small.yaml")
    assert plan.returncode == 0 and planned_jobs(plan.stdout) == {"score_explainer": 1}, plan.stdout
    r = run_snakemake(work, *targets, "--configfile", "small.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    man = pd.read_parquet(work / "data/manifests/demo/ae-bilinear.parquet")
    for view in ("none", "jpeg75", "combo"):
        # clean: val + test (the threshold comes from val); a perturbation: the test images
        splits = ["val", "test"] if view == "none" else ["test"]
        want = man[man["split"].isin(splits)].set_index("image_id")["label"].to_dict()
        s = pd.read_parquet(out / f"{view}.parquet")
        assert set(s["detector"]) == {"explainer"} and set(s["perturbation"]) == {view}
        assert s.set_index("image_id")["label"].to_dict() == want and len(s) == len(want)
        assert s["p_fake"].between(0, 1).all() and s["p_fake"].notna().all()
