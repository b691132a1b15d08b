"""K-fold splits (``splits: {mode: kfold, k}``, issue #20): folds by hash, every image tested
exactly once, each fold's model validated (and thresholded) on the next fold, metrics pooled.

In-process tests on the session's tiny dataset relabelled with k-fold; the end-to-end run is
in :func:`test_kfold_workflow_tests_every_image_once` (workflow tier)."""

import copy
import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import run_snakemake
from sidflow.config import ConfigError

K = 3


def _relabel(tiny_data, root, k=K) -> list[str]:
    """The tiny dataset's manifests relabelled with k-fold splits (in ``root``)."""
    from sidflow.data.manifest import label_generator

    out = []
    for proc in tiny_data["processed"]:
        gen = proc.rsplit("/", 1)[-1]
        man = root / f"{gen}.parquet"
        summary = label_generator(proc, man, root / f"{gen}.dup.parquet", "toy", gen,
                                  "fake" if gen == "fake" else "real", {"mode": "kfold", "k": k})  # fmt: skip
        assert summary["splits"]["test"] == summary["rows"] == 60 and sum(summary["folds"]) == 60
        assert len(summary["folds"]) == k and min(summary["folds"]) > 0
        out.append(str(man))
    return out


@pytest.mark.unit
def test_folds_are_stable_balanced_and_views_test_each_image_once():
    from sidflow.data.folds import assign_folds, fold_view

    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(3000)]
    folds = assign_folds(ids, 5)
    assert set(folds) == set(range(5)) and max(np.bincount(folds)) < 700  # ~600 each
    # adding images never moves another image to another fold
    assert assign_folds(ids[:100] + [hashlib.sha256(b"new").hexdigest()], 5)[:100] == folds[:100]
    man = pd.DataFrame({"image_id": ids, "split": "test", "fold": folds})
    views = [fold_view(man, f, 5) for f in range(5)]
    test = np.stack([(v["split"] == "test").to_numpy() for v in views])
    val = np.stack([(v["split"] == "val").to_numpy() for v in views])
    assert (test.sum(0) == 1).all() and (val.sum(0) == 1).all()  # each image once in each role
    v = views[4]
    assert set(v.loc[man["fold"] == 0, "split"]) == {"val"}  # fold 4 validates on fold 0 (wraps)
    assert set(v.loc[man["fold"].isin([1, 2, 3]), "split"]) == {"train"}
    assert (man["split"] == "test").all()  # a view is a copy
    with pytest.raises(ValueError, match="x.parquet: no 'fold' column; relabel"):
        fold_view(man.drop(columns="fold"), 0, 5, source="x.parquet")
    with pytest.raises(ValueError, match="do not fit k=3"):
        fold_view(man, 0, 3)
    with pytest.raises(ValueError, match="k >= 2"):
        assign_folds(ids, 1)


@pytest.mark.unit
def test_train_folds_resumes_at_the_first_unfinished_fold(tmp_path):
    from sidflow.data.folds import FOLDS_FILE
    from sidflow.io import read_json, write_json
    from sidflow.train.kfold import train_folds

    trained = []

    def one(f, out, ckpt):
        trained.append((f, out.name, ckpt.name))
        meta = {"threshold": 0.1 * (f + 1), "best_epoch": 1, "val_ap": 0.5 + f / 10,
                "train_images": 10 + f, "student": {"arch": "resnet18"}, "distill": {}}  # fmt: skip
        write_json(out / "student.json", meta)
        return meta

    out = tmp_path / "m"
    card = train_folds(one, out, tmp_path / "ckpt", 3)
    assert trained == [(0, "fold0", "fold0"), (1, "fold1", "fold1"), (2, "fold2", "fold2")]
    assert card["fold_thresholds"] == pytest.approx([0.1, 0.2, 0.3]) and card["threshold"] is None
    assert card["val_ap"] == pytest.approx(0.6) and card["fold_train_images"] == [10, 11, 12]
    assert read_json(out / FOLDS_FILE) == {"k": 3, "folds": ["fold0", "fold1", "fold2"]}
    assert read_json(out / "student.json") == card
    # a run killed while training fold 2: folds 0 and 1 are kept, only fold 2 trains again
    shutil.rmtree(out / "fold2")
    (out / FOLDS_FILE).unlink()
    trained.clear()
    train_folds(one, out, tmp_path / "ckpt", 3)
    assert trained == [(2, "fold2", "fold2")]


@pytest.mark.models
def test_kfold_student_scores_every_image_once_at_its_folds_threshold(tiny_data, tmp_path):
    from sidflow.evaluate.metrics import evaluate_scores
    from sidflow.evaluate.scores import score_student_views
    from sidflow.models.student import load_student
    from sidflow.train.launch import run_spec

    manifests = _relabel(tiny_data, tmp_path)
    model = tmp_path / "models" / "student-nokd"
    card = run_spec({
        "student": {"image_size": 32}, "distill": {"alpha": 0.0, "epochs": 1, "batch_size": 16, "seed": 3},
        "manifests": manifests, "processed_dirs": tiny_data["processed"], "out_dir": str(model),
        "checkpoint_dir": str(tmp_path / "ckpt"), "preprocess": {"image_size": 32}, "kfold": K,
    })  # fmt: skip
    assert card["kfold"]["k"] == K and len(card["fold_thresholds"]) == K
    metas = [load_student(model / f"fold{f}")[1] for f in range(K)]
    assert [m["fold"] for m in metas] == [{"fold": f, "k": K} for f in range(K)]
    # each fold trains on the k-2 other folds: 60 images per generator, ~20 per fold
    mans = pd.concat([pd.read_parquet(m) for m in manifests])
    for f, m in enumerate(metas):
        assert m["train_images"] == int((~mans["fold"].isin([f, (f + 1) % K])).sum())
    assert card["fold_thresholds"] == [m["threshold"] for m in metas]
    with pytest.raises(ValueError, match="a k-fold model folder .* e.g. .*fold0"):
        load_student(model)

    tables = []
    for man, proc in zip(manifests, tiny_data["processed"], strict=True):
        views = {"none": (tmp_path / f"{len(tables)}-none.parquet", None),
                 "jpeg75": (tmp_path / f"{len(tables)}-jpeg.parquet", [{"jpeg": 75}])}  # fmt: skip
        rows = score_student_views(model, man, proc, "student-nokd", views, batch_size=32)
        clean, jpeg = (pd.read_parquet(p) for p, _ in views.values())
        assert rows == {"none": 120, "jpeg75": 60}  # val + test rows of every fold; test only
        assert clean.loc[clean["split"] == "test", "image_id"].is_unique
        assert set(clean.loc[clean["split"] == "test", "image_id"]) == set(
            pd.read_parquet(man)["image_id"]
        )
        assert set(clean.loc[clean["split"] == "val", "image_id"]) == set(
            pd.read_parquet(man)["image_id"]
        )
        assert sorted(jpeg["image_id"]) == sorted(clean.loc[clean["split"] == "test", "image_id"])
        tables.append(
            clean.assign(
                fold=clean["image_id"].map(pd.read_parquet(man).set_index("image_id")["fold"])
            )
        )
    scores = pd.concat(tables, ignore_index=True)
    # every test verdict is its own fold model's: p_fake against that model's threshold
    test = scores[scores["split"] == "test"]
    want = np.where(test["p_fake"] >= test["fold"].map(dict(enumerate(card["fold_thresholds"]))),
                    "fake", "real")  # fmt: skip
    assert (test["verdict"].to_numpy() == want).all()
    # pooled metrics: accuracy from the folds' verdicts over all 120 images, no single threshold
    metrics = evaluate_scores(scores.drop(columns="fold"), ["toy/real", "toy/fake"])
    pooled = metrics[metrics["dataset"] == "all"].iloc[0]
    assert (pooled["n_real"], pooled["n_fake"]) == (60, 60) and pooled["threshold"] is None
    correct = (test["verdict"] == np.where(test["label"] == 1, "fake", "real")).mean()
    assert pooled["accuracy"] == pytest.approx(correct)


@pytest.mark.unit
def test_kfold_config_refuses_steps_without_a_kfold_form_by_name(tmp_path):
    from sidflow.checks import check_config
    from sidflow.config import load_config

    base = load_config("config.yaml")
    cfg = copy.deepcopy(base)
    cfg["splits"] |= {"mode": "kfold", "k": 4}
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    msg = str(err.value)
    for named in ("experiment.teachers: []", "student 'student-kd', which distils from teachers",
                  "RINE detectors", "explainer: {enabled: false}", "probe: {enabled: false}",
                  "gradcam: {enabled: false}", "shortcut_audit: false"):  # fmt: skip
        assert named in msg, (named, msg)
    cfg = copy.deepcopy(base)
    cfg["splits"] |= {"mode": "kfold", "k": 4}
    cfg["experiment"] |= {"teachers": [], "detectors": ["student-nokd"], "shortcut_audit": False}
    cfg["probe"]["enabled"] = cfg["gradcam"]["enabled"] = False
    plan = check_config(cfg)
    assert plan.detectors_of("student") == ["student-nokd"]
    cfg["splits"]["test_per_generator"] = 10
    with pytest.raises(ConfigError, match="test_per_generator cannot be combined with mode kfold"):
        check_config(cfg)


KFOLD_OVERLAY = {
    "experiment": {"name": "kfold", "teachers": [], "detectors": ["student-nokd"],
                   "shortcut_audit": False, "perturbations": ["jpeg75"]},
    "splits": {"mode": "kfold", "k": K},
    "probe": {"enabled": False},
    "gradcam": {"enabled": False},
}  # fmt: skip


@pytest.mark.workflow
def test_kfold_workflow_tests_every_image_once(small_run, tmp_path):
    """The small run relabelled with 3 folds: one no-KD student per fold, every image of every
    generator a test row once, the report explains the folds."""
    work = tmp_path / "wf"
    shutil.copytree(small_run, work, symlinks=True)
    (work / "kfold.yaml").write_text(yaml.safe_dump(KFOLD_OVERLAY))
    r = run_snakemake(work, "--configfile", "small.yaml", "kfold.yaml")
    assert r.returncode == 0, r.stderr[-4000:]
    model = work / "results" / "kfold" / "models" / "student-nokd"
    # (Snakemake's own .snakemake_timestamp marker of a directory output aside)
    assert sorted(p.name for p in model.iterdir() if p.name != ".snakemake_timestamp") == [
        "fold0",
        "fold1",
        "fold2",
        "folds.json",
        "student.json",
    ]
    mans = pd.concat([pd.read_parquet(p) for p in (work / "data" / "manifests" / "demo").glob("*.parquet")
                      if not p.name.endswith(".duplicates.parquet")])  # fmt: skip
    assert set(mans["fold"]) == {0, 1, 2} and (mans["split"] == "test").all()
    scores = pd.concat(
        pd.read_parquet(p) for p in (work / "results" / "kfold" / "scores").rglob("none.parquet")
    )
    test = scores[scores["split"] == "test"]
    assert test["image_id"].is_unique and set(test["image_id"]) == set(mans["image_id"])
    assert test["verdict"].isin(["real", "fake"]).all()
    metrics = pd.read_parquet(work / "results" / "kfold" / "metrics" / "metrics.parquet")
    pooled = metrics[(metrics["dataset"] == "all") & (metrics["perturbation"] == "none")].iloc[0]
    assert pooled["n_real"] + pooled["n_fake"] == len(mans)
    page = (work / "results" / "report" / "kfold" / "index.html").read_text()
    assert "3-fold cross-validation" in page and "fold 2" in page
