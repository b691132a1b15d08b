"""The zoo's recipes: CNNDetection's blur + JPEG training augmentation, an attribution head
that drives the real/fake decision (the GenImage study), Grad-CAM on a ViT and on a net
without a spatial map, and the presets that plan them (zoo-cifake, genimage)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import REPO, copy_workflow, planned_jobs, run_snakemake, write_images
from sidflow.data.loading import ImageBank
from sidflow.models.student import StudentConfig, create_student

pytestmark = pytest.mark.models

# CNNDetection's training augmentation (blur + JPEG, each p = 0.5; quality 30 or 100)
AUGMENT = {
    "blur_prob": 0.5,
    "blur_sigma": [0.0, 3.0],
    "jpeg_prob": 0.5,
    "jpeg_quality": [30, 100],
    "flip": True,
}


def test_attribution_head_drives_the_binary_decision():
    torch.manual_seed(0)
    cfg = StudentConfig(arch="resnet18", generators=["real", "d/a", "d/b"], attribution_drives=True)
    model = create_student("resnet18", cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(4, 3, 32, 32))
    p_fake = torch.softmax(out["logits"], 1)[:, 1]
    p_real = torch.softmax(out["generator_logits"], 1)[:, 0]
    torch.testing.assert_close(p_fake, 1 - p_real, rtol=0, atol=1e-6)
    x = torch.randn(4, 3, 32, 32)
    beside = create_student("resnet18", StudentConfig(generators=["real", "d/a", "d/b"])).eval()
    beside.load_state_dict(model.state_dict())  # the same weights; the binary head decides
    with torch.no_grad():
        b, d = beside(x), model(x)
    torch.testing.assert_close(b["generator_logits"], d["generator_logits"])
    assert not torch.allclose(torch.softmax(b["logits"], 1), torch.softmax(d["logits"], 1))


def test_augmented_batches_are_seeded_per_image_and_epoch(tiny_data):
    import pandas as pd

    from sidflow.data.loading import load_images

    rows = load_images(tiny_data["manifests"][:1], tiny_data["processed"][:1], ["train"]).head(8)
    bank, ids = ImageBank(rows["jpeg"]), list(rows["image_id"])
    spec = AUGMENT | {"blur_prob": 1.0, "blur_sigma": [1.0, 2.0], "jpeg_prob": 1.0}
    a, b = (
        bank.augmented_batch(range(8), ids, 1, 0, spec),
        bank.augmented_batch(range(8), ids, 1, 0, spec),
    )
    other = bank.augmented_batch(range(8), ids, 2, 0, spec)
    plain = bank.batch(range(8))
    assert a.shape == plain.shape == (8, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, other) and (a - plain).abs().mean() > 0.01  # blurred + re-encoded
    assert isinstance(pd.Series(ids).iloc[0], str)


def test_cnndetection_recipe_with_a_driving_attribution_head_trains_and_scores(tiny_data, tmp_path):
    from sidflow.evaluate.scores import score_student_views
    from sidflow.models.student import load_student
    from sidflow.train.distill import DistillConfig, train_student

    out = tmp_path / "student"
    aug = dict(AUGMENT)
    train_student(StudentConfig(arch="npr", image_size=32, attribution_drives=True),
                  DistillConfig(alpha=0.0, epochs=1, batch_size=16, seed=2, generator_weight=1.0, augment=aug,
                                precision="fp32"),  # scored in fp32 too: exact parity
                  tiny_data["manifests"], tiny_data["processed"], {}, out,
                  preprocess={"image_size": 32, "jpeg_quality": 95})  # fmt: skip
    meta = json.loads((out / "student.json").read_text())
    assert meta["student"]["arch"] == "npr" and meta["student"]["attribution_drives"] is True
    assert meta["distill"]["augment"] == aug
    score_student_views(out, tiny_data["manifests"][1], tiny_data["processed"][1], "s",
                        {"none": (tmp_path / "none.parquet", None)})  # fmt: skip
    import pandas as pd

    scores = pd.read_parquet(tmp_path / "none.parquet")
    model, _ = load_student(out)
    from sidflow.data.loading import load_images

    imgs = load_images(tiny_data["manifests"][1:2], tiny_data["processed"][1:2], ["val", "test"])
    x = ImageBank(imgs["jpeg"], meta["student"]["image_mean"], meta["student"]["image_std"]).batch(
        range(len(imgs))
    )
    with torch.no_grad():
        gen = torch.softmax(model(x)["generator_logits"], 1)
    np.testing.assert_allclose(scores["p_fake"], 1 - gen[:, 0].numpy(), atol=1e-5)


def test_gradcam_on_a_vit_and_a_clear_skip_without_a_map(tmp_path):
    from sidflow.evaluate.gradcam import cam_pictures, gradcam_gallery
    from sidflow.models.student import save_student

    torch.manual_seed(0)
    jpegs = []
    for i in range(2):
        write_images(tmp_path / "img", 1, seed=i, size=32)
    import io

    from PIL import Image

    for p in sorted((tmp_path / "img").iterdir())[:2]:
        buf = io.BytesIO()
        Image.open(p).convert("RGB").resize((32, 32)).save(buf, "JPEG")
        jpegs.append(buf.getvalue())
    vit = create_student("deit-small", StudentConfig(arch="deit-small", image_size=32))
    meta = {"student": {"image_mean": 0.5, "image_std": 0.5}}
    pngs = cam_pictures(vit, meta, jpegs, [0, 1], "layer3", 64)
    assert len(pngs) == 2 and all(p.startswith(b"\x89PNG") for p in pngs)
    spectrum = create_student("spectrum", StudentConfig(arch="spectrum", image_size=32))
    card = {"student": {"arch": "spectrum", "image_size": 32, "image_mean": 0.5, "image_std": 0.5},
            "preprocess": {}, "threshold": 0.5}  # fmt: skip
    save_student(spectrum, card, tmp_path / "spec")
    assert gradcam_gallery(tmp_path / "spec", [], [], [], tmp_path / "cam") == []
    index = json.loads((tmp_path / "cam/index.json").read_text())
    assert index["images"] == [] and "no spatial feature map" in index["unsupported"]


def test_zoo_cifake_plans_one_training_job_per_zoo_detector(cifake_zip, tmp_path):
    work = copy_workflow(tmp_path / "wf", experiments=True)
    (tmp_path / "shared").symlink_to(cifake_zip.parents[2])  # ../shared beside the copy
    r = run_snakemake(work, "-n", "--configfile", "experiments/zoo-cifake.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = planned_jobs(r.stdout + r.stderr)
    assert jobs["student_distill"] == 9 and "teacher_finetune" not in jobs
    assert jobs["probe_fit"] == 1  # UnivFD: CLIP features + a linear probe
    for name in ("xception", "deit-small", "cnndetection", "npr", "spectrum"):
        assert f"results/zoo-cifake/models/{name}" in r.stdout


def test_genimage_preset_pairs_every_generator_with_its_own_reals(tmp_path):
    from sidflow.config import load_sheet

    work = copy_workflow(tmp_path / "wf", experiments=True)
    sheet = load_sheet(REPO / "config/generators.tsv")
    rows = sheet[sheet["dataset"] == "genimage"]
    assert len(rows) == 16 and set(rows[rows["label"] == "fake"]["pair"]) == {
        f"real-{g}" for g in ("midjourney", "sd14", "sd15", "adm", "glide", "wukong", "vqdm", "biggan")}  # fmt: skip
    for i, sub in enumerate(rows["source_subdir"]):
        write_images(work / "data/downloads/genimage" / sub, 2, seed=i, size=16)
    r = run_snakemake(work, "-n", "--configfile", "experiments/genimage.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = planned_jobs(r.stdout + r.stderr)
    assert jobs["student_distill"] == 1 and jobs["preprocess"] == 16
    assert "results/genimage/models/resnet50-attribution" in r.stdout


@pytest.mark.parametrize("arch", ["resnet18", "npr"])
def test_gradcam_layers_of_cnns(arch):
    from sidflow.evaluate.gradcam import target_layer

    model = create_student(arch, StudentConfig(arch=arch, image_size=32))
    assert isinstance(target_layer(model, "layer3"), torch.nn.Module)
