"""``pretrained: imagenet``: torchvision's own weights from the torch cache, offline; a clear
error that says where the file goes when it is missing; never needed to load a trained model."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sidflow.models.student import (
    StudentConfig,
    create_student,
    imagenet_weights,
    load_student,
    resolve_student_config,
    save_student,
)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SIDFLOW_OFFLINE", "1")  # never try the network in tests
    return tmp_path / "torch"


def _cache_random_resnet18(torch_home: Path) -> dict:
    """A randomly initialised ResNet18 saved where torchvision keeps its ImageNet weights."""
    from torchvision.models import resnet18

    torch.manual_seed(3)
    state = resnet18(weights=None).state_dict()
    path = torch_home / "hub" / "checkpoints" / Path(imagenet_weights("resnet18").url).name
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def test_imagenet_weights_load_from_the_torch_cache(torch_home):
    saved = _cache_random_resnet18(torch_home)
    cfg = resolve_student_config(
        StudentConfig(image_size=32, stem="imagenet", pretrained="imagenet")
    )
    assert cfg.image_mean == pytest.approx([0.485, 0.456, 0.406])
    assert cfg.image_std == pytest.approx([0.229, 0.224, 0.225])
    model = create_student("resnet18", cfg)
    body = model.state_dict()
    for name in ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.bn2.running_var"):
        key = next(k for k in body if k.endswith(name))
        assert torch.equal(body[key], saved[name]), name


def test_missing_imagenet_weights_say_where_to_put_them(torch_home):
    with pytest.raises(
        FileNotFoundError,
        match=r"offline \(SIDFLOW_OFFLINE\).*place it at .*hub/checkpoints/resnet18-",
    ):
        create_student("resnet18", StudentConfig(pretrained="imagenet"))


def test_a_trained_student_loads_without_the_pretrained_weights(torch_home, tmp_path):
    from dataclasses import asdict

    _cache_random_resnet18(torch_home)
    cfg = resolve_student_config(
        StudentConfig(image_size=32, stem="imagenet", pretrained="imagenet")
    )
    model = create_student("resnet18", cfg).eval()
    save_student(model, {"student": asdict(cfg), "distill": {}}, tmp_path / "s")
    for f in (torch_home / "hub" / "checkpoints").iterdir():
        f.unlink()  # another machine: no ImageNet weights in its cache
    loaded, meta = load_student(tmp_path / "s")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x)["logits"], loaded(x)["logits"]
    assert meta["student"]["pretrained"] == "imagenet" and np.allclose(a.numpy(), b.numpy())


def test_per_channel_normalisation():
    import io

    from PIL import Image

    from sidflow.data.loading import ImageBank, to_tensor

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 128)).save(buf, format="JPEG", quality=100)
    mean, std = [0.5, 0.25, 0.5], [0.5, 0.25, 0.25]
    x = to_tensor([buf.getvalue()], mean, std)
    assert x.shape == (1, 3, 8, 8)
    got = x.mean(dim=(0, 2, 3)).numpy()
    want = (np.array([255, 0, 128]) / 255 - np.array(mean)) / np.array(std)
    assert np.allclose(got, want, atol=0.05)
    bank = ImageBank([buf.getvalue()] * 2, mean, std)
    assert torch.allclose(bank.batch([0, 1])[0], x[0])
    with pytest.raises(ValueError, match="3 values"):
        to_tensor([buf.getvalue()], [0.5, 0.5], 0.5)
