"""Generator attribution (real + each training generator): the scores' ``generator_pred``,
accuracy and the (N+1) x (N+1) confusion matrix, the report's picture, ``sidflow predict``'s
attribution column; and generator folders made from labelled metadata (a ``local`` source
with ``metadata``), on synthetic files and on the shipped AIGen-VQA archive."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import AIGEN_GENERATORS
from sidflow.data.metadata_source import canonical_generator, fetch_by_metadata
from sidflow.evaluate.metrics import attribution_confusion, attribution_metrics, evaluate_scores


def predict_csv(model, files, tmp_path) -> pd.DataFrame:
    """``sidflow predict`` on copies of ``files``: its CSV as a table."""
    from sidflow.cli import main

    images = tmp_path / "predict-in"
    images.mkdir()
    for p in files:
        (images / p.name).write_bytes(p.read_bytes())
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                str(images),
                "--output",
                str(tmp_path / "p.csv"),
                "--quiet",
            ]
        )
        == 0
    )
    return pd.read_csv(tmp_path / "p.csv")


def scores_frame() -> pd.DataFrame:
    rows = []
    # 4 real, 4 a, 4 b test images; the head says real,real,real,a | a,a,a,b | b,b,real,real
    answers = {
        "real": ["real"] * 3 + ["d/a"],
        "a": ["d/a"] * 3 + ["d/b"],
        "b": ["d/b"] * 2 + ["real"] * 2,
    }
    for gen, preds in answers.items():
        for i, pred in enumerate(preds):
            for split in ("val", "test"):
                rows.append({"image_id": f"{gen}{i}{split}", "detector": "s", "dataset": "d", "generator": gen,
                             "split": split, "label": int(gen != "real"), "perturbation": "none",
                             "p_fake": 0.9 if gen != "real" else 0.1, "generator_pred": pred})  # fmt: skip
    return pd.DataFrame(rows)


def test_attribution_accuracy_and_confusion_counts():
    s = scores_frame()
    test = s[s["split"] == "test"]
    assert attribution_metrics(test) == {"attribution_accuracy": 8 / 12, "n_attribution": 12}
    assert attribution_metrics(test.drop(columns="generator_pred"))["attribution_accuracy"] is None
    conf = attribution_confusion(s).set_index(["true", "pred"])["n"].to_dict()
    assert conf == {("real", "real"): 3, ("real", "d/a"): 1, ("d/a", "d/a"): 3, ("d/a", "d/b"): 1,
                    ("d/b", "d/b"): 2, ("d/b", "real"): 2}  # fmt: skip
    table = evaluate_scores(s, ["d/real", "d/a"])
    by_gen = table.set_index("generator")["attribution_accuracy"]
    assert by_gen["a"] == 3 / 4 and by_gen["b"] == 2 / 4 and by_gen["all"] == 8 / 12


def test_report_draws_the_attribution_matrix(tmp_path):
    from sidflow.report.context import ReportData
    from sidflow.report.sections_metrics import attribution_section

    s = scores_frame()
    path = tmp_path / "attribution.csv"
    attribution_confusion(s).to_csv(path, index=False)
    r = ReportData("x", evaluate_scores(s, ["d/real", "d/a"]), curves={"attribution": str(path)})
    html = attribution_section(r)
    assert "Generator attribution" in html and "s: accuracy 0.667" in html and "<svg" in html
    assert "real (4)" in html and "d/b (4)" in html  # rows with their counts
    assert attribution_section(ReportData("x", r.metrics)) == ""


@pytest.mark.parametrize(("raw", "canon"), [("big gan", "biggan"), ("Big_GAN", "biggan"),
                                              ("stable diffusion 1.4", "sd1.4"), ("stable_diffusion_1_5", "sd1.5"),
                                              ("natural", "natural"), ("ADM", "adm")])  # fmt: skip
def test_generator_names_are_canonical(raw, canon):
    assert canonical_generator(raw) == canon


def _png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
        path
    )


def test_generator_folders_from_json_and_csv_metadata(tmp_path):
    src = tmp_path / "set"
    for i in range(4):
        _png(src / "a" / f"{i}.png", i)
    (src / "a" / "meta.json").write_text(json.dumps([
        {"image": "0.png", "metadata": {"generator": "big gan"}},
        {"image": "1.png", "metadata": {"generator": "big_gan"}},
        {"image": "2.png", "metadata": {"generator": "natural"}},
    ]))  # fmt: skip
    (src / "b.csv").write_text("file,source\na/1.png,BigGAN\na/3.png,biggan\n")
    spec = {"files": ["a/meta.json", "b.csv"], "image": "image", "group": "metadata.generator"}
    dest = tmp_path / "out"
    dest.mkdir()
    # the CSV names its columns differently: one spec per file layout
    assert fetch_by_metadata(src, spec | {"files": ["a/meta.json"]}, "biggan", dest) == 2
    assert sorted(p.name for p in dest.iterdir()) == ["000000-0.png", "000001-1.png"]
    csv_dest = tmp_path / "csv"
    csv_dest.mkdir()
    csv_spec = {"files": ["b.csv"], "image": "file", "group": "source"}
    assert fetch_by_metadata(src, csv_spec, "biggan", csv_dest) == 2
    # an archive works the same; a path leaving the set and a missing image are clear errors
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in src.rglob("*"):
            if p.is_file():
                z.write(p, p.relative_to(src).as_posix())
    zdest = tmp_path / "z"
    zdest.mkdir()
    assert fetch_by_metadata(archive, spec | {"files": ["a/meta.json"]}, "natural", zdest) == 1
    (src / "a" / "meta.json").write_text(
        json.dumps([{"image": "../../x.png", "metadata": {"generator": "adm"}}])
    )
    with pytest.raises(
        ValueError, match=r"meta\.json: record 0: image path '../../x.png' leaves the dataset"
    ):
        fetch_by_metadata(src, spec | {"files": ["a/meta.json"]}, "adm", tmp_path)
    (src / "a" / "meta.json").write_text(
        json.dumps([{"image": "9.png", "metadata": {"generator": "adm"}}])
    )
    with pytest.raises(FileNotFoundError, match=r"record 0: image .*9\.png does not exist"):
        fetch_by_metadata(src, spec | {"files": ["a/meta.json"]}, "adm", tmp_path)
    with pytest.raises(FileNotFoundError, match="no image has source = 'vqdm'"):
        fetch_by_metadata(src, csv_spec, "vqdm", tmp_path)
    with pytest.raises(ValueError, match=r"b\.csv: record 0 has no 'metadata.generator'"):
        fetch_by_metadata(src, csv_spec | {"group": "metadata.generator"}, "vqdm", tmp_path)


def test_aigen_vqa_archive_gives_nine_generator_folders(aigen_zip, tmp_path):
    from sidflow.config import load_config

    spec = load_config("config.yaml")["datasets"]["aigen-vqa"]["source"]["metadata"]
    counts = {}
    for g in AIGEN_GENERATORS:
        (tmp_path / g).mkdir()
        counts[g] = fetch_by_metadata(aigen_zip, spec, g, tmp_path / g)
    assert sum(counts.values()) == 249 and counts["natural"] == 55 and min(counts.values()) >= 13


@pytest.mark.models
def test_attribution_head_in_scores_and_predict(tiny_data, tmp_path):
    from sidflow.evaluate.scores import score_student_views
    from sidflow.models.student import StudentConfig
    from sidflow.train.distill import DistillConfig, train_student

    out = tmp_path / "student"
    train_student(StudentConfig(image_size=32), DistillConfig(alpha=0.0, epochs=1, batch_size=16, seed=1,
                  generator_weight=1.0), tiny_data["manifests"], tiny_data["processed"], {}, out,
                  preprocess={"image_size": 32, "jpeg_quality": 95})  # fmt: skip
    meta = json.loads((out / "student.json").read_text())
    assert meta["student"]["generators"] == ["real", "toy/fake"]
    score_student_views(out, tiny_data["manifests"][1], tiny_data["processed"][1], "s",
                        {"none": (tmp_path / "none.parquet", None)})  # fmt: skip
    scores = pd.read_parquet(tmp_path / "none.parquet")
    assert (
        set(scores["generator_pred"]) <= {"real", "toy/fake"}
        and scores["generator_pred"].notna().all()
    )
    pred = predict_csv(out, sorted((tiny_data["raw"] / "fake").iterdir())[:3], tmp_path)
    assert len(pred) == 3 and set(pred["attribution"]) <= {"real", "toy/fake"}
    assert pred["attribution_p"].between(0.5, 1.0).all()  # the most likely of two sources


@pytest.mark.models
def test_nine_way_attribution_on_the_aigen_vqa_images(aigen_zip, tmp_path):
    """The real multi-generator check, in-process: the 249 AIGen-VQA images into 9 generator
    folders (metadata), preprocessed, labelled, a student with a 9-way attribution head that
    drives its decision, scored, evaluated; the report draws the 9 x 9 matrix and
    ``sidflow predict`` writes the attributed generator."""
    from sidflow.config import load_config, load_sheet
    from sidflow.data.manifest import label_generator
    from sidflow.data.preprocess import PreprocessParams, preprocess_generator
    from sidflow.evaluate.metrics import run_evaluation
    from sidflow.evaluate.scores import score_student_views
    from sidflow.models.student import StudentConfig
    from sidflow.report.context import ReportData
    from sidflow.report.sections_metrics import attribution_section
    from sidflow.train.distill import DistillConfig, train_student

    cfg = load_config("config.yaml")
    spec = cfg["datasets"]["aigen-vqa"]["source"]["metadata"]
    sheet = load_sheet(cfg["generators_sheet"])
    rows = sheet[sheet["dataset"] == "aigen-vqa"]
    manifests, processed = [], []
    for gen, sub, label in zip(
        rows["generator"], rows["source_subdir"], rows["label"], strict=True
    ):
        raw, proc = tmp_path / "raw" / gen, tmp_path / "proc" / gen
        raw.mkdir(parents=True)
        fetch_by_metadata(aigen_zip, spec, sub, raw)
        preprocess_generator(raw, proc, PreprocessParams(image_size=32, jpeg_quality=95))
        man = tmp_path / "man" / f"{gen}.parquet"
        label_generator(proc, man, tmp_path / "man" / f"{gen}.dup.parquet", "aigen-vqa", gen, label,
                        {"train": 0.6, "val": 0.2, "test": 0.2})  # fmt: skip
        manifests.append(str(man))
        processed.append(str(proc))
    out = tmp_path / "student"
    train_student(StudentConfig(image_size=32, attribution_drives=True),
                  DistillConfig(alpha=0.0, epochs=2, batch_size=32, seed=0, generator_weight=1.0),
                  manifests, processed, {}, out, preprocess={"image_size": 32, "jpeg_quality": 95})  # fmt: skip
    meta = json.loads((out / "student.json").read_text())
    assert len(meta["student"]["generators"]) == 9 and meta["student"]["generators"][0] == "real"
    scores = []
    for i, (man, proc) in enumerate(zip(manifests, processed, strict=True)):
        scores.append(tmp_path / f"s{i}.parquet")
        score_student_views(out, man, proc, "resnet18-attribution", {"none": (scores[-1], None)})
    plots = tmp_path / "plots"
    table = run_evaluation([str(p) for p in scores], [f"aigen-vqa/{g}" for g in rows["generator"]],
                           tmp_path / "m.parquet", tmp_path / "m.csv", tmp_path / "m.json", plots_dir=plots)  # fmt: skip
    conf = pd.read_csv(plots / "attribution.csv")
    trues = set(conf["true"])
    assert (
        "real" in trues and len(trues) >= 8
    )  # every source with test images (sd1.4 has 13 images)
    assert set(conf["pred"]) <= set(meta["student"]["generators"])
    pooled = table[(table["generator"] == "all")]["attribution_accuracy"].iloc[0]
    assert 0 <= pooled <= 1
    html = attribution_section(
        ReportData("x", table, curves={"attribution": str(plots / "attribution.csv")})
    )
    assert "resnet18-attribution: accuracy" in html and html.count("<svg") == 1
    pred = predict_csv(out, sorted((tmp_path / "raw" / "midjourney").iterdir())[:2], tmp_path)
    assert (
        set(pred["attribution"]) <= set(meta["student"]["generators"])
        and pred["attribution_p"].gt(0).all()
    )
