"""Student detectors: torchvision ResNet18 with a configurable stem (more architectures,
ResNet50, Xception, DeiT-S, EfficientNet-B0, ConvNeXt-T, NPR, spectrum, in
:mod:`sidflow.models.zoo`, created by name the same way).

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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sidflow.config import config_digest
from sidflow.data.loading import ImageBank
from sidflow.devices import autocast_to
from sidflow.io import atomic_dir, read_json, sha256_file, write_json
from sidflow.registry import STUDENTS

log = logging.getLogger(__name__)


@dataclass
class StudentConfig:
    arch: str = "resnet18"
    image_size: int = 32
    stem: str = "cifar-maxpool"
    num_classes: int = 2
    # "imagenet": torchvision's own ImageNet weights (torch hub cache, offline-safe), or a path
    # to a torchvision state_dict (.pth/.safetensors); None: random initialisation
    pretrained: str | None = None
    image_mean: float | list[float] = 0.5  # one value, or per channel (ImageNet weights)
    image_std: float | list[float] = 0.5
    object_classes: list[str] = field(default_factory=list)  # names; empty = no object head
    generators: list[str] = field(default_factory=list)  # "dataset/generator"; empty = no head
    # the attribution head decides real vs fake: logits = (log p(real), log(1 - p(real)))
    attribution_drives: bool = False


def head_outputs(model: nn.Module, feats: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every student's heads on its features: ``logits`` (real, fake), ``features``, and the
    object/generator heads it has. With ``attribution_drives`` the (real + generators) head
    decides: the binary logits are (log p(real), log sum over generators of p), so softmax
    gives p_fake = 1 - p(real) and every consumer (thresholds, export, predict) follows it."""
    cfg = model.cfg
    out = {"logits": model.head(feats), "features": feats}
    if cfg.object_classes:
        out["object_logits"] = model.object_head(feats)
    if cfg.generators:
        gen = model.generator_head(feats)
        out["generator_logits"] = gen
        if cfg.attribution_drives:
            lp = torch.log_softmax(gen.float(), 1)
            out["logits"] = torch.stack([lp[:, 0], torch.logsumexp(lp[:, 1:], 1)], 1).to(gen.dtype)
    return out


class ResNetStudent(nn.Module):
    feature_dim = 512
    torchvision_arch = "resnet18"  # a torchvision ResNet builder (zoo.ResNet50Student: resnet50)

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        from torchvision import models

        self.cfg = cfg
        arch = self.torchvision_arch
        net = getattr(models, arch)(weights=None, num_classes=1000)
        if cfg.pretrained == IMAGENET:
            net.load_state_dict(imagenet_state_dict(arch))
            log.info("student: torchvision ImageNet weights (%s)", imagenet_weights(arch))
        elif cfg.pretrained:
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
        return head_outputs(self, self.backbone(x))

    def gradcam_layer(self) -> nn.Module:  # the last block of the stage Grad-CAM explains
        return self.backbone.layer4[-1]

    @classmethod
    def pretrained_normalisation(cls) -> tuple[list[float], list[float]]:
        """(mean, std) per channel of the torchvision ImageNet weights' own transforms."""
        t = imagenet_weights(cls.torchvision_arch).transforms()
        return [float(v) for v in t.mean], [float(v) for v in t.std]


IMAGENET = "imagenet"
OFFLINE_VARS = ("SIDFLOW_OFFLINE", "HF_HUB_OFFLINE", "TORCH_HUB_OFFLINE")


def imagenet_weights(arch: str):
    """torchvision's default ImageNet weights enum of ``arch`` (ResNet18: IMAGENET1K_V1)."""
    from torchvision.models import get_model_weights

    return get_model_weights(arch).DEFAULT


def imagenet_state_dict(arch: str) -> dict:
    """torchvision's ImageNet weights of ``arch`` from the torch hub cache
    (``$TORCH_HOME/hub/checkpoints``), as torchvision itself stores them; downloaded (hash
    checked) only when online and none of ``SIDFLOW_OFFLINE``/``HF_HUB_OFFLINE``/
    ``TORCH_HUB_OFFLINE`` is set. A missing file offline is an error saying where to put it."""
    import os

    weights = imagenet_weights(arch)
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    reason = "offline (" + ", ".join(v for v in OFFLINE_VARS if os.environ.get(v, "0") != "0") + ")"
    if reason == "offline ()":
        try:
            return weights.get_state_dict(progress=False, check_hash=True)
        except Exception as e:  # noqa: BLE001 - no network, proxy, hash mismatch: say so below
            reason = f"download failed: {e}"
    raise FileNotFoundError(
        f"{arch} ImageNet weights {weights} are not in the torch cache and could not be fetched "
        f"({reason}): download {weights.url} and place it at {path} (the cache folder is "
        "$TORCH_HOME/hub/checkpoints; set TORCH_HOME to use another)"
    )


def resolve_student_config(cfg: StudentConfig) -> StudentConfig:
    """``pretrained: imagenet`` takes its input normalisation from the weights' own transforms
    (ImageNet mean/std per channel) unless mean/std were set to something else than 0.5: the
    architecture's ``pretrained_normalisation()`` (torchvision transforms, timm's pretrained
    config), else torchvision's weights of that name."""
    if cfg.pretrained != IMAGENET or (cfg.image_mean, cfg.image_std) != (0.5, 0.5):
        return cfg
    norm = getattr(STUDENTS.get(cfg.arch), "pretrained_normalisation", None)
    if norm is None:
        t = imagenet_weights(cfg.arch).transforms()
        mean, std = [float(v) for v in t.mean], [float(v) for v in t.std]
    else:
        mean, std = norm()
    return replace(cfg, image_mean=mean, image_std=std)


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


# What decides a verdict besides the weights: hashed into ``config_sha256`` of student.json.
VERDICT_FIELDS = ("student", "preprocess", "threshold")


class ModelIntegrityError(ValueError):
    """A student folder whose weights or settings changed after training."""


def config_sha256(meta: dict) -> str:
    """SHA-256 of the card's verdict-deciding block (architecture and normalisation,
    preprocessing, threshold) as canonical JSON."""
    return config_digest({k: meta.get(k) for k in VERDICT_FIELDS})


def save_student(model: torch.nn.Module, meta: dict, out_dir: str | Path) -> None:
    """``model.safetensors`` + ``student.json``; the card records ``weights_sha256`` (of the
    weights file) and ``config_sha256`` (:func:`config_sha256`), checked by :func:`load_student`."""
    from safetensors.torch import save_file

    with atomic_dir(out_dir) as tmp:
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        write_json(tmp / "student.json", meta)
        card = read_json(tmp / "student.json")  # hash the values as they are stored
        meta["weights_sha256"] = card["weights_sha256"] = sha256_file(tmp / "model.safetensors")
        meta["config_sha256"] = card["config_sha256"] = config_sha256(card)
        write_json(tmp / "student.json", card)


def check_student(model_dir: str | Path, meta: dict) -> None:
    """Refuse a folder whose weights or verdict-deciding settings differ from what training
    recorded; a folder written before the hashes existed is loaded with a warning."""
    folder = Path(model_dir)
    want_w, want_c = meta.get("weights_sha256"), meta.get("config_sha256")
    if want_w is None or want_c is None:
        log.warning("%s: student.json has no integrity hashes (weights_sha256, config_sha256; "
                    "written by an older sidflow): weights and settings are not verified", folder)  # fmt: skip
        return
    got_w = sha256_file(folder / "model.safetensors")
    if got_w != want_w:
        raise ModelIntegrityError(
            f"{folder}: model.safetensors has sha256 {got_w}, but student.json records "
            f"weights_sha256 {want_w}: the weights changed after training (retrain or restore them)"
        )
    got_c = config_sha256(meta)
    if got_c != want_c:
        raise ModelIntegrityError(
            f"{folder}: student.json was edited after training: its {', '.join(VERDICT_FIELDS)} "
            f"hash to {got_c}, not the recorded config_sha256 {want_c} (these settings decide "
            "the verdicts; retrain instead of editing them)"
        )


def load_student(model_dir: str | Path):
    """(model, meta) from a folder written by :func:`save_student` (safetensors only),
    after checking its integrity hashes (:func:`check_student`)."""
    from safetensors.torch import load_file

    from sidflow.data.folds import FOLDS_FILE

    folder = Path(model_dir)
    if (folder / FOLDS_FILE).is_file():
        raise ValueError(f"{folder}: a k-fold model folder (one model per fold, splits.mode kfold): "
                         f"load one of its folds, e.g. {folder / 'fold0'}")  # fmt: skip
    if not (folder / "student.json").is_file():
        raise FileNotFoundError(f"{folder}: not a student folder (no student.json)")
    meta = read_json(folder / "student.json")
    check_student(folder, meta)
    # the trained weights replace any initialisation: never fetch pretrained ones to load
    cfg = StudentConfig(**{**meta["student"], "pretrained": None})
    model = create_student(cfg.arch, cfg)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), meta
