"""The explainer's pipeline steps in-process on tiny data: the VQA archive unpacked and
checked, fine-tune -> scores as a detector -> VQA before/after -> gallery -> report section
(the workflow run covers the rules; tests/test_explainer.py covers the model)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sidflow.config import Plan, defined_detectors, load_config, load_sheet
from sidflow.data.vqa_data import VqaArchiveError, extract_vqa_archive
from sidflow.io import read_json, sha256_file
from sidflow.report.explain_section import explanations_section

pytestmark = pytest.mark.models

SETTINGS = {
    "enabled": True, "checkpoint": "tiny",
    "tiny": {"image_size": 32, "patch_size": 8, "vision_hidden": 32, "vision_layers": 1,
             "text_hidden": 64, "text_layers": 1, "heads": 4, "intermediate": 128},
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q_proj", "v_proj"], "train_projector": True},
    "finetune": {"epochs": 2, "lr": 0.005, "batch_size": 8},
    "conversations": ["shipped", "template"], "template_images": 4,
    "vqa": {"max_new_tokens": 3}, "gallery": 1,
}  # fmt: skip


def _image(seed: int) -> Image.Image:
    return Image.fromarray(
        np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    )


def vqa_zip(path, n: int = 4):
    """An archive in the aigen-vqa layout: n conversations, n true/false and n multiple-choice
    questions, recorded answers for the published models."""
    gens = ["natural", "midjourney", "big gan", "stable_diffusion_1_4"]
    conv = [{"id": f"c{i}", "image": f"images/c{i}.png", "metadata": {"generator": gens[i % 4], "object_category": "cat"},
             "conversations": [{"from": "human", "value": "<image>\nIs it real? Explain."},
                               {"from": "gpt", "value": "Fake. The fur melts." if i % 2 else "Real. A photo."}]}
            for i in range(n)]  # fmt: skip
    tf = [{"id": f"t{i}", "image": f"images/t{i}.png", "question": "Is this image real or artificially generated? "
           "Just answer with Real or Fake.", "ground_truth": "Fake" if i % 2 else "Real", "answer": "",
           "metadata": {"generator": gens[i % 4]}} for i in range(n)]  # fmt: skip
    mc = [{"id": f"m{i}", "image": f"images/m{i}.png", "question": "Why? A: x B: y C: z D: w. Answer with the letter.",
           "ground_truth": "ABCD"[i % 4], "answer": "", "metadata": {"generator": gens[i % 4], "object_category": "cat"}}
          for i in range(n)]  # fmt: skip
    rec = {"true-false.base.json": [{"id": q["id"], "answer": "Real"} for q in tf],
           "true-false.finetuned-epoch6.json": [{"id": q["id"], "answer": q["ground_truth"]} for q in tf],
           "multiple-choice.base.json": [{"id": q["id"], "answer": "A"} for q in mc],
           "multiple-choice.finetuned-epoch6.json": [{"id": q["id"], "answer": "I think B"} for q in mc]}  # fmt: skip
    with zipfile.ZipFile(path, "w") as z:
        for folder, items in (("finetune", conv), ("true-false", tf), ("multiple-choice", mc)):
            name = "conversations.json" if folder == "finetune" else "questions.json"
            z.writestr(f"aigen-vqa/{folder}/{name}", json.dumps(items))
            for k, item in enumerate(items):
                buf = io.BytesIO()
                _image(hash(item["id"]) % 1000 + k).save(buf, "PNG")
                z.writestr(f"aigen-vqa/{folder}/{item['image']}", buf.getvalue())
        for name, answers in rec.items():
            z.writestr(f"aigen-vqa/recorded-answers/{name}", json.dumps(answers))
    return path


def test_vqa_archive_is_checked_and_unpacked(tmp_path):
    archive = vqa_zip(tmp_path / "a.zip")
    summary = extract_vqa_archive(archive, sha256_file(archive), tmp_path / "out")
    assert summary["conversations"] == summary["true-false"] == summary["multiple-choice"] == 4
    assert len(summary["recorded_answers"]) == 4
    assert (tmp_path / "out/finetune/images/c0.png").is_file()
    with pytest.raises(VqaArchiveError, match=r"a\.zip: sha256 [0-9a-f]{64} is not the configured"):
        extract_vqa_archive(archive, "0" * 64, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()  # nothing half-written
    with pytest.raises(VqaArchiveError, match="does not exist"):
        extract_vqa_archive(tmp_path / "missing.zip", None, tmp_path / "out3")
    broken = tmp_path / "b.zip"
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("aigen-vqa/finetune/conversations.json", "[]")
    with pytest.raises(VqaArchiveError, match="true-false/questions.json is missing"):
        extract_vqa_archive(broken, None, tmp_path / "out4")


def test_explainer_is_a_detector_only_when_enabled_and_scored():
    cfg = load_config("config.yaml")
    sheet = load_sheet(cfg["generators_sheet"])
    assert Plan(cfg, sheet).detector_kind("explainer").name == "explainer"
    assert "explainer" in Plan(cfg, sheet).detectors()
    assert "explainer" in Plan(cfg, sheet).trained()  # perturbations apply to it
    cfg["explainer"]["score"] = False
    assert "explainer" not in Plan(cfg, sheet).detectors()
    cfg["explainer"]["enabled"] = False
    assert "explainer" not in [n for n, _, _ in defined_detectors(cfg)]


@pytest.fixture(scope="module")
def explained(tiny_data, tmp_path_factory):
    """fine-tune -> VQA -> scores -> gallery on the session's tiny data and a tiny archive."""
    from sidflow.evaluate.scores import score_explainer_views
    from sidflow.evaluate.vqa_run import explain_gallery, vqa_eval
    from sidflow.train.explainer_finetune import explainer_finetune

    root = tmp_path_factory.mktemp("explainer")
    vqa = root / "vqa"
    extract_vqa_archive(vqa_zip(root / "a.zip"), None, vqa)
    card = explainer_finetune(
        SETTINGS, tiny_data["manifests"], tiny_data["processed"], vqa, root / "model", seed=3
    )
    errors = vqa_eval(
        root / "model", vqa, root / "answers.parquet", root / "errors.parquet", max_new_tokens=3
    )
    views = {"none": (root / "none.parquet", None), "jpeg": (root / "jpeg.parquet", [{"jpeg": 50}])}
    rows = score_explainer_views(
        root / "model", tiny_data["manifests"][1], tiny_data["processed"][1], "explainer", views
    )
    gallery = explain_gallery(root / "model", tiny_data["manifests"], tiny_data["processed"], root / "gallery.json",
                              per_generator=1, seed=0, max_new_tokens=4)  # fmt: skip
    return {
        "root": root,
        "card": card,
        "errors": errors,
        "rows": rows,
        "gallery": gallery,
        "vqa": vqa,
    }


def test_finetune_trains_on_shipped_and_template_conversations_of_the_train_split(explained):
    card, root = explained["card"], explained["root"]
    # 4 shipped + 4 template images per generator x 2 generators x (explanation + true/false)
    assert card["conversations"]["by_source"] == {"shipped": 4, "template": 16}
    assert (
        card["split"] == "train" and card["steps"] == 2 * 3
    )  # 20 conversations / 8 = 3 steps x 2 epochs
    assert 0 < card["trainable_params"] < card["total_params"]
    assert [h["epoch"] for h in card["history"]] == [1, 2]
    for sub in ("model", "base"):
        assert (root / "model" / sub / "model.safetensors").is_file()
    assert read_json(root / "model/card.json") == json.loads(json.dumps(card))


def test_vqa_before_after_and_the_published_answers_are_scored(explained):
    errors, root = explained["errors"], explained["root"]
    overall = errors[errors["scope"] == "overall"].set_index(["kind", "model"])
    assert set(overall.index.get_level_values("model")) == {
        "base",
        "finetuned",
        "published-base",
        "published-epoch6",
    }
    # the recorded answers of the tiny archive: base says "Real" to all (2 of 4 wrong), epoch 6
    # answers the truth; multiple choice: "A" is right once in 4, "I think B" never parses
    assert overall.loc[("true-false", "published-base"), "errors"] == 2
    assert overall.loc[("true-false", "published-epoch6"), "errors"] == 0
    assert overall.loc[("multiple-choice", "published-base"), "errors"] == 3
    assert overall.loc[("multiple-choice", "published-epoch6"), ["errors", "other"]].tolist() == [
        4,
        4,
    ]
    per_gen = errors[(errors["scope"] == "generator") & (errors["model"] == "finetuned")]
    assert set(per_gen["key"]) == {"natural", "midjourney", "biggan", "sd1.4"}
    answers = pd.read_parquet(root / "answers.parquet")
    assert len(answers) == 2 * 4 * 4 and answers["answer"].map(type).eq(str).all()


def test_explainer_scores_every_view_of_a_generator(explained, tiny_data):
    root = explained["root"]
    man = pd.read_parquet(tiny_data["manifests"][1])
    clean, jpeg = pd.read_parquet(root / "none.parquet"), pd.read_parquet(root / "jpeg.parquet")
    assert explained["rows"] == {
        "none": int(man["split"].isin(["val", "test"]).sum()),
        "jpeg": int((man["split"] == "test").sum()),
    }
    assert set(clean["detector"]) == {"explainer"} and set(jpeg["perturbation"]) == {"jpeg"}
    assert clean["p_fake"].between(0, 1, inclusive="neither").all()
    assert clean["p_fake"].nunique() > 1  # the image reaches the answer


def test_gallery_and_report_section(explained):
    root, gallery = explained["root"], explained["gallery"]
    assert [g["generator"] for g in gallery] == ["fake", "real"]  # one per generator (no Grad-CAM)
    assert all(isinstance(g["explanation"], str) and 0 < g["explainer_p_fake"] < 1 for g in gallery)
    page = explanations_section(str(root / "model/card.json"), str(root / "gallery.json"),
                                str(root / "errors.parquet"), "a.zip")  # fmt: skip
    assert "Explanations: the vision-language explainer" in page
    assert "True/false questions" in page and "Multiple-choice explanations" in page
    assert "50.0% (2/4)" in page  # published-base true/false error, as errors/n
    assert page.count("<figure") == 2 and "data:image/jpeg;base64," in page
    skipped = explanations_section(str(root / "model/card.json"), None, None, "x/aigen.zip")
    assert "VQA benchmark skipped" in skipped and "x/aigen.zip" in skipped
    assert explanations_section(None, None, None, None) == ""
