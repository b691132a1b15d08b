"""Student detectors: torchvision ResNet18 with a configurable stem.

    model = create_student("resnet18", StudentConfig(image_size=32, stem="cifar-maxpool"))
    out = model(x)   # {"logits": (N,2), "features": (N,512)}

Optional extra heads (multi-task "seed variants"): ``object_classes`` (e.g. the ten
CIFAR-10 names) adds ``out["object_logits"]``; ``generators`` (real + each training
generator) adds ``out["generator_logits"]`` for generator attribution.

Stems (the 32x32 case needs care: fake fingerprints are high-frequency and the
ImageNet stem, 7x7 stride 2 + max-pool, throws most of them away):

* ``imagenet``: torchvision's stem, for 224/256 px inputs; ImageNet weights can
  be loaded from a local file (``pretrained``), never downloaded here.
* ``cifar-maxpool``: 3x3 stride-1 convolution, keeps the max-pool (4x less
  compute than ``cifar``, most of its accuracy).
* ``cifar``: 3x3 stride-1 convolution, no max-pool (full resolution, slowest).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sidflow.data.loading import ImageBank
from sidflow.devices import autocast_to
from sidflow.io import atomic_dir, read_json, write_json
from sidflow.registry import STUDENTS

log = logging.getLogger(__name__)


@dataclass
class StudentConfig:
    arch: str = "resnet18"
    image_size: int = 32
    stem: str = "cifar-maxpool"
    num_classes: int = 2
    pretrained: str | None = None  # path to a torchvision state_dict (.pth/.safetensors)
    image_mean: float = 0.5
    image_std: float = 0.5
    object_classes: list[str] = field(default_factory=list)  # names; empty = no object head
    generators: list[str] = field(default_factory=list)  # "dataset/generator"; empty = no head


class ResNetStudent(nn.Module):
    feature_dim = 512

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        from torchvision.models import resnet18

        self.cfg = cfg
        net = resnet18(weights=None, num_classes=1000)
        if cfg.pretrained:
            net.load_state_dict(_load_state_dict(cfg.pretrained))
            log.info("student: ImageNet weights from %s", cfg.pretrained)
        else:
            log.info("student: random initialisation (no local pretrained weights configured)")
        if cfg.stem in ("cifar", "cifar-maxpool"):
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            if cfg.stem == "cifar":
                net.maxpool = nn.Identity()
        elif cfg.stem != "imagenet":
            raise ValueError(f"unknown stem {cfg.stem!r} (imagenet, cifar-maxpool, cifar)")
        net.fc = nn.Identity()
        self.backbone = net
        self.head = nn.Linear(self.feature_dim, cfg.num_classes)
        if cfg.object_classes:
            self.object_head = nn.Linear(self.feature_dim, len(cfg.object_classes))
        if cfg.generators:
            self.generator_head = nn.Linear(self.feature_dim, len(cfg.generators))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(x)
        out = {"logits": self.head(feats), "features": feats}
        if self.cfg.object_classes:
            out["object_logits"] = self.object_head(feats)
        if self.cfg.generators:
            out["generator_logits"] = self.generator_head(feats)
        return out


def _load_state_dict(path: str) -> dict:
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


STUDENTS.register("resnet18", ResNetStudent)


def create_student(name: str = "resnet18", cfg: StudentConfig | dict | None = None) -> nn.Module:
    cls = STUDENTS.get(name)
    if isinstance(cfg, dict):
        cfg = StudentConfig(**cfg)
    return cls(cfg or StudentConfig(arch=name))


# -- save, load, predict (used by training, scoring, export, predict, probe backbones) ------
@torch.no_grad()
def predict(model, bank: ImageBank, batch_size: int, device, dtype=None) -> dict[str, np.ndarray]:
    """``{"p_fake": ..., "object_pred": ..., "generator_pred": ...}`` (heads that exist)."""
    model.eval()
    out: dict[str, list] = {}
    for start in range(0, len(bank), batch_size):
        x = bank.batch(range(start, min(start + batch_size, len(bank)))).to(device)
        with autocast_to(device, dtype):
            res = model(x.contiguous(memory_format=torch.channels_last))
        out.setdefault("p_fake", []).append(
            torch.softmax(res["logits"].float(), 1)[:, 1].cpu().numpy()
        )
        for head in ("object", "generator"):
            if f"{head}_logits" in res:
                out.setdefault(f"{head}_pred", []).append(
                    res[f"{head}_logits"].argmax(1).cpu().numpy()
                )
    return {k: np.concatenate(v) for k, v in out.items()} if out else {"p_fake": np.zeros(0)}


def save_student(model: torch.nn.Module, meta: dict, out_dir: str | Path) -> None:
    from safetensors.torch import save_file

    with atomic_dir(out_dir) as tmp:
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        write_json(tmp / "student.json", meta)


def load_student(model_dir: str | Path):
    """(model, meta) from a folder written by :func:`save_student` (safetensors only)."""
    from safetensors.torch import load_file

    meta = read_json(Path(model_dir) / "student.json")
    cfg = StudentConfig(**meta["student"])
    model = create_student(cfg.arch, cfg)
    model.load_state_dict(load_file(str(Path(model_dir) / "model.safetensors")))
    return model.eval(), meta
