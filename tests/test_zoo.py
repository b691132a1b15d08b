"""The student zoo (``sidflow.models.zoo``): every registered architecture trains through the
distillation rule, saves/loads bit-exactly, predicts from the CLI and exports to ONNX with
parity; pretrained weights load from local files and fail clearly offline; the NPR residual
and the spectrum do what their papers say."""

import csv
import math
import re
from dataclasses import asdict

import pytest
import torch
from PIL import Image

from helpers import rgb_array
from sidflow.cli import main
from sidflow.models.student import (
    StudentConfig,
    create_student,
    load_student,
    resolve_student_config,
    save_student,
)
from sidflow.registry import STUDENTS
from sidflow.train.distill import _Trainable
from sidflow.train.distill_loss import DistillationLoss

pytestmark = pytest.mark.models

SIZE = 32
HEADS = {"object_classes": ["cat", "dog", "ship"], "generators": ["real", "a/sd", "b/gan"]}


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo-images")
    paths = [folder / f"img{i}.png" for i in range(2)]
    for i, p in enumerate(paths):
        Image.fromarray(rgb_array(i, SIZE)).save(p)
    return paths


def _batch(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, SIZE, SIZE, generator=g).contiguous(memory_format=torch.channels_last)


def _train_step(model) -> dict:
    """One step of the training rule (task CE + KD + feature KD + both heads) on random labels."""
    crit = DistillationLoss(alpha=0.5, temperature=2.0, beta=1.0, feature_dim=model.feature_dim,
                            teacher_dims={"t": 8}, object_weight=1.0, generator_weight=1.0)  # fmt: skip
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 2, (4,), generator=g)
    soft = torch.softmax(torch.randn(4, 2, generator=g), 1)
    obj, gen = torch.randint(0, 3, (4,), generator=g), torch.randint(0, 3, (4,), generator=g)
    terms = _Trainable(model, crit, None, torch.device("cpu"))(
        _batch(), y, soft, {"t": torch.randn(4, 8, generator=g)}, obj, gen
    )
    terms["loss"].backward()
    return terms


@pytest.fixture(scope="module", params=STUDENTS.names())
def trained(request, tmp_path_factory):
    """One architecture (with both heads) after one training step, saved to a folder; the
    Grad-CAM layer's outputs of that step are recorded."""
    arch = request.param
    torch.manual_seed(0)
    cfg = StudentConfig(arch=arch, image_size=SIZE, **HEADS)
    model = create_student(arch, cfg).to(memory_format=torch.channels_last).train()
    maps: list = []
    if arch not in ("resnet18", "spectrum"):
        hook = model.gradcam_layer().register_forward_hook(lambda m, i, o: maps.append(o))
    terms = _train_step(model)
    if maps:
        hook.remove()
    folder = tmp_path_factory.mktemp("zoo") / arch
    meta = {"student": asdict(cfg), "threshold": 0.5,
            "preprocess": {"image_size": SIZE, "jpeg_quality": 95}}  # fmt: skip
    save_student(model.eval(), meta, folder)
    return {"arch": arch, "cfg": cfg, "model": model, "terms": terms, "maps": maps,
            "folder": folder}  # fmt: skip


def test_every_architecture_trains_by_the_distillation_rule(trained):
    model, terms = trained["model"], trained["terms"]
    assert model.cfg is trained["cfg"] and model.feature_dim > 0
    assert all(math.isfinite(float(v.detach())) for v in terms.values())
    assert terms["feat_loss"] > 0 and terms["object_loss"] > 0 and terms["generator_loss"] > 0
    grads = [p.grad for p in model.backbone.parameters()]
    assert grads[0] is not None and grads[0].abs().sum() > 0  # reaches the input layer
    if trained["maps"]:  # ViT: tokens (a CAM needs a reshape), CNNs: a spatial map
        assert trained["maps"][0].ndim == (3 if trained["arch"] == "deit-small" else 4)


def test_every_architecture_saves_and_loads_exactly(trained):
    model, x = trained["model"], _batch(3, seed=2)
    with torch.no_grad():
        want = model(x)
    assert set(want) == {"logits", "features", "object_logits", "generator_logits"}
    assert want["features"].shape == (3, model.feature_dim)
    loaded, meta = load_student(trained["folder"])
    assert meta["student"]["arch"] == trained["arch"]
    with torch.no_grad():  # same memory format: same kernels, bit-identical outputs
        got = loaded.to(memory_format=torch.channels_last)(x)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_every_architecture_predicts_from_the_cli(trained, pngs, tmp_path):
    out = tmp_path / "preds.csv"
    assert main(["predict", "--model", str(trained["folder"]), "--quiet", "--output", str(out),
                 *map(str, pngs)]) == 0  # fmt: skip
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 and all(0 <= float(r["p_fake"]) <= 1 for r in rows)


def test_every_architecture_exports_to_onnx_with_parity(trained):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from sidflow.models.export import export_student

    report = export_student(trained["folder"], formats=("onnx",))
    assert report["onnx"]["max_abs_diff"] <= 1e-3
    assert (trained["folder"] / "student.onnx").is_file()


# -- pretrained weights ---------------------------------------------------------------------------
@pytest.fixture
def offline_caches(tmp_path, monkeypatch):
    """Empty torch and Hugging Face caches, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


def _save(state: dict, path) -> str:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return str(path)


def _assert_backbone_is(model, saved: dict) -> None:
    body = model.backbone.state_dict()
    assert body and all(torch.equal(v, saved[k]) for k, v in body.items())


def test_local_torchvision_weights_load_into_resnet50(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(5)
    saved = resnet50(weights=None).state_dict()
    path = _save(saved, tmp_path / "r50.safetensors")
    cfg = StudentConfig(arch="resnet50", image_size=SIZE, stem="imagenet", pretrained=path)
    _assert_backbone_is(create_student("resnet50", cfg), saved)


def test_local_timm_weights_load_into_efficientnet(tmp_path):
    import timm

    torch.manual_seed(6)
    saved = timm.create_model("efficientnet_b0").state_dict()  # with its classifier
    path = _save(saved, tmp_path / "effnet.safetensors")
    cfg = StudentConfig(arch="efficientnet-b0", image_size=SIZE, pretrained=path)
    _assert_backbone_is(create_student("efficientnet-b0", cfg), saved)
    bad = _save({"conv_stem.weight": saved["conv_stem.weight"]}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="not a efficientnet_b0 state_dict"):
        create_student("efficientnet-b0", StudentConfig(arch="efficientnet-b0", pretrained=bad))


def test_imagenet_weights_offline_from_the_hugging_face_cache(offline_caches):
    """timm weights placed in the HF cache layout load offline, with timm's normalisation."""
    import timm

    torch.manual_seed(7)
    saved = timm.create_model("efficientnet_b0").state_dict()
    repo = offline_caches / "hf" / "hub" / "models--timm--efficientnet_b0.ra_in1k"
    _save(saved, repo / "snapshots" / "abc123" / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    cfg = resolve_student_config(
        StudentConfig(arch="efficientnet-b0", image_size=SIZE, pretrained="imagenet")
    )
    assert cfg.image_mean == pytest.approx([0.485, 0.456, 0.406])
    _assert_backbone_is(create_student("efficientnet-b0", cfg), saved)


@pytest.mark.parametrize(
    ("arch", "names"),
    [
        ("resnet50", [r"offline \(HF_HUB_OFFLINE\)", "torch/hub/checkpoints/resnet50-"]),
        ("efficientnet-b0", ["timm/efficientnet_b0.ra_in1k", "hf/hub", "HF_HOME="]),
        ("deit-small", ["timm/deit_small_patch16_224.fb_in1k", "hf/hub"]),
        ("xception", ["xception-43020ad28.pth", "torch/hub/checkpoints"]),
    ],
)
def test_missing_imagenet_weights_offline_say_what_and_where(offline_caches, arch, names):
    with pytest.raises(FileNotFoundError) as err:
        create_student(arch, StudentConfig(arch=arch, image_size=SIZE, pretrained="imagenet"))
    assert all(re.search(name, str(err.value)) for name in names), str(err.value)
    assert str(offline_caches) in str(err.value)


@pytest.mark.parametrize("arch", ["npr", "spectrum"])
def test_paper_detectors_have_no_imagenet_weights(arch):
    with pytest.raises(ValueError, match="no ImageNet weights"):
        create_student(arch, StudentConfig(arch=arch, pretrained="imagenet"))
    with pytest.raises(ValueError, match="no ImageNet weights"):
        resolve_student_config(StudentConfig(arch=arch, pretrained="imagenet"))


# -- NPR and spectrum ---------------------------------------------------------------------------
def test_npr_residual_vanishes_on_2x2_blocks_only():
    from sidflow.models.zoo import npr_residual

    blocks = torch.randn(2, 3, SIZE // 2, SIZE // 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.equal(npr_residual(blocks), torch.zeros_like(blocks))
    i = torch.arange(SIZE)
    checker = ((i[:, None] + i[None, :]) % 2).float().expand(1, 3, SIZE, SIZE)
    res = npr_residual(checker)
    assert res.abs().sum() > 0 and torch.equal(res[..., ::2, ::2], torch.zeros(1, 3, 16, 16))


def test_spectrum_is_the_shifted_log_dft():
    model = create_student("spectrum", StudentConfig(arch="spectrum", image_size=SIZE)).eval()
    const = torch.full((1, 3, SIZE, SIZE), 0.7)
    spec = model.log_spectrum(const)
    assert int(spec.flatten().argmax()) == (SIZE // 2) * SIZE + SIZE // 2  # DC at the centre
    x = torch.randn(2, 3, SIZE, SIZE)
    gray = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    ref = torch.fft.fftshift(torch.fft.fft2(gray.double()), dim=(-2, -1)).abs()
    ref = 0.5 * torch.log(ref**2 + model.eps**2)
    torch.testing.assert_close(model.log_spectrum(x).double(), ref, atol=2e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="Grad-CAM"):
        model.gradcam_layer()
