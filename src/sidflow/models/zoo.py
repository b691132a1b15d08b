"""The student architecture zoo: more detectors with the ResNet18 student's interface.

    model = create_student("efficientnet-b0", StudentConfig(arch="efficientnet-b0", image_size=32))
    out = model(x)   # {"logits": (N,2), "features": (N, model.feature_dim)} (+ object/generator)

Each class takes a :class:`~sidflow.models.student.StudentConfig` (kept as ``cfg``), has
``feature_dim``, the optional ``object_classes``/``generators`` heads and ``gradcam_layer()``,
so each trains (KD student or no-KD baseline), saves, loads, exports and predicts like
``resnet18``. Importing this module registers in :data:`sidflow.registry.STUDENTS` (name:
source; feature dim; last feature map at 32 px):

* ``resnet50``: torchvision ``resnet50``, ``resnet18``'s stems; 2048; 2x2 (cifar-maxpool stem).
* ``xception``: timm ``legacy_xception``, the original Xception (Chollet; the one FaceForensics++
  uses; timm's ``xception41`` is the modified "aligned" DeepLab variant); 2048; 1x1.
* ``deit-small``: timm ``deit_small_patch16_224``, ``img_size=cfg.image_size``; 384; 2x2 patches.
* ``efficientnet-b0``: timm ``efficientnet_b0``; 1280; 1x1.  ``convnext-tiny``: timm
  ``convnext_tiny``; 768; 1x1.
* ``npr``: :class:`NPRStudent` (Tan et al., CVPR 2024); 512; 4x4.
* ``spectrum``: :class:`SpectrumStudent` (Frank et al. 2020, Durall et al. 2020); size²; none.

At 32 px the 1x1 nets run, but pool most of the high-frequency fingerprint away early; DeiT-S
sees four 16-px patches. ``stem`` applies to the ResNets only.

``pretrained: imagenet``: torchvision's weights (torch cache, as ``resnet18``) or timm's (the
Hugging Face cache ``$HF_HOME/hub``; the torch cache for URL-hosted ``legacy_xception``), from
the cache; a download only when none of ``SIDFLOW_OFFLINE``/``HF_HUB_OFFLINE``/
``TORCH_HUB_OFFLINE`` is set and the host answers; else a :class:`FileNotFoundError` naming the
hub id (or URL) and the cache folder. A path: a local ``state_dict`` (``.safetensors``, else
``torch.load(weights_only=True)``) of that torchvision/timm network (timm: classifier optional).
The input normalisation comes from the weights (``pretrained_normalisation()``, used by
:func:`~sidflow.models.student.resolve_student_config`). ``npr``/``spectrum``: no ImageNet
weights (a file of their own backbone's weights is accepted).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sidflow.models.student import (
    IMAGENET,
    OFFLINE_VARS,
    ResNetStudent,
    StudentConfig,
    _load_state_dict,
    head_outputs,
)
from sidflow.registry import STUDENTS

log = logging.getLogger(__name__)


class ZooStudent(nn.Module):
    """``backbone`` (image -> (N, feature_dim) features, via :meth:`embed`) + the heads."""

    arch = ""
    gradcam_path = ""  # the Grad-CAM layer inside ``backbone`` (a get_submodule path)

    def __init__(self, cfg: StudentConfig, backbone: nn.Module, feature_dim: int):
        super().__init__()
        self.cfg, self.backbone, self.feature_dim = cfg, backbone, int(feature_dim)
        self.head = nn.Linear(self.feature_dim, cfg.num_classes)
        if cfg.object_classes:
            self.object_head = nn.Linear(self.feature_dim, len(cfg.object_classes))
        if cfg.generators:
            self.generator_head = nn.Linear(self.feature_dim, len(cfg.generators))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return head_outputs(self, self.embed(x))

    def gradcam_layer(self) -> nn.Module:  # the last conv stage / norm: what a CAM explains
        return self.backbone.get_submodule(self.gradcam_path)

    @classmethod
    def pretrained_normalisation(cls) -> tuple[list[float], list[float]]:
        raise ValueError(f"student {cls.arch!r} has no ImageNet weights (pretrained: imagenet)")


# -- torchvision ------------------------------------------------------------------------------
class ResNet50Student(ResNetStudent):
    """torchvision ResNet50 with the ``resnet18`` student's stems and weight loading."""

    arch = torchvision_arch = "resnet50"
    feature_dim = 2048

    def gradcam_layer(self) -> nn.Module:
        return self.backbone.layer4[-1]


# -- timm -------------------------------------------------------------------------------------
def hf_hub_cache() -> Path:
    """The Hugging Face hub cache as the environment names it now (``HF_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")).expanduser()


def _unreachable(url: str, timeout: float = 5.0) -> str:
    """Why ``url``'s host (or the proxy for it) takes no TCP connection within ``timeout``
    seconds; "" if it does (a quick check that spares the hub client's retries)."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    u = urlsplit(url)
    proxy = getproxies().get(u.scheme)
    if proxy and not proxy_bypass(u.hostname or ""):
        u = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
        socket.create_connection((u.hostname, port), timeout=timeout).close()
        return ""
    except OSError as e:
        return f"no connection to {u.hostname}: {e}"


def timm_imagenet_file(name: str) -> str:
    """The local file of timm's default pretrained weights of ``name``: from the cache, else
    downloaded by timm into that cache when online and the host answers within 5 s (HF hub:
    its own 10 s timeouts; URL: a 30 s socket timeout)."""
    import timm

    pcfg = timm.models.get_pretrained_cfg(name)
    if pcfg is None or not (pcfg.hf_hub_id or pcfg.url):
        raise ValueError(f"timm has no pretrained weights for {name}")
    if pcfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, rev = pcfg.hf_hub_id.partition("@")
        cache, probe = hf_hub_cache(), os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        names = (pcfg.hf_hub_filename or "model.safetensors", "pytorch_model.bin")
        source = f"Hugging Face hub id {pcfg.hf_hub_id} ({names[0]})"
        where = f"the Hugging Face cache {cache} (HF_HOME={os.environ.get('HF_HOME', '(unset)')})"

        def find() -> str | None:
            kw = {"cache_dir": cache, "revision": rev or None}
            hits = (try_to_load_from_cache(repo, f, **kw) for f in names)
            return next((h for h in hits if isinstance(h, str)), None)
    else:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        path = cache / Path(pcfg.url.split("?")[0]).name
        source = probe = pcfg.url
        where = f"the torch cache {cache} ($TORCH_HOME/hub/checkpoints)"

        def find() -> str | None:
            return str(path) if path.is_file() else None

    hit, offline = find(), [v for v in OFFLINE_VARS if os.environ.get(v, "0") != "0"]
    reason = "" if hit else f"offline ({', '.join(offline)})" if offline else _unreachable(probe)
    if not hit and not reason:
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)
        try:
            timm.create_model(name, pretrained=True, cache_dir=cache)  # downloads into the cache
            hit, reason = find(), "downloaded, but not found in the cache"
        except Exception as e:  # noqa: BLE001 - no network, proxy, missing file: say so below
            reason = f"download failed: {e}"
        finally:
            socket.setdefaulttimeout(old)
    if hit:
        return hit
    raise FileNotFoundError(
        f"{name} ImageNet weights ({source}) are not in {where} and could not be fetched "
        f"({reason}): fetch them once online (timm.create_model({name!r}, pretrained=True)) "
        "or copy that cache folder here"
    )


def timm_backbone(name: str, pretrained: str | None = None, **kwargs) -> nn.Module:
    """timm ``name`` without classifier (``num_classes=0``: pooled features); ``pretrained``:
    None, ``"imagenet"`` (:func:`timm_imagenet_file`) or a local state_dict file. timm adapts
    the weights (e.g. DeiT's position embeddings to ``img_size``); a backbone tensor missing
    from the file is an error."""
    import timm
    from timm.models import load_state_dict

    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    path = timm_imagenet_file(name) if pretrained == IMAGENET else str(pretrained)
    state = load_state_dict(path)  # .safetensors, else torch.load(weights_only=True)
    keys = set(state)
    net = timm.create_model(name, pretrained=True, num_classes=0,
                            pretrained_cfg_overlay={"state_dict": state}, **kwargs)  # fmt: skip
    missing = sorted(set(net.state_dict()) - keys)
    if missing:
        raise ValueError(f"{path}: not a {name} state_dict (missing {', '.join(missing[:5])}...)")
    log.info("student: %s weights from %s", name, path)
    return net


class TimmStudent(ZooStudent):
    """A timm network's pooled features + the heads."""

    timm_name = ""

    def __init__(self, cfg: StudentConfig):
        net = timm_backbone(self.timm_name, cfg.pretrained, **self.timm_kwargs(cfg))
        super().__init__(cfg, net, net.num_features)

    @staticmethod
    def timm_kwargs(cfg: StudentConfig) -> dict:
        return {}

    @classmethod
    def pretrained_normalisation(cls) -> tuple[list[float], list[float]]:
        """(mean, std) per channel from timm's pretrained config of the network."""
        import timm

        pcfg = timm.models.get_pretrained_cfg(cls.timm_name)
        return [float(v) for v in pcfg.mean], [float(v) for v in pcfg.std]


class XceptionStudent(TimmStudent):
    arch, timm_name, gradcam_path = "xception", "legacy_xception", "bn4"


class DeiTSmallStudent(TimmStudent):
    """DeiT-S/16 at ``cfg.image_size`` (>= 16). ``gradcam_layer``: the last block's norm1, whose
    patch tokens :meth:`gradcam_reshape` lays out as a map (the class token dropped)."""

    arch, timm_name, gradcam_path = "deit-small", "deit_small_patch16_224", "blocks.11.norm1"

    def gradcam_reshape(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, prefix + h*w, C) tokens -> (N, C, h, w) for Grad-CAM."""
        patches = tokens[:, getattr(self.backbone, "num_prefix_tokens", 1) :, :]
        side = int(round(math.sqrt(patches.shape[1])))
        return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)

    @staticmethod
    def timm_kwargs(cfg: StudentConfig) -> dict:
        if cfg.image_size < 16:
            raise ValueError(f"deit-small needs image_size >= 16 (patch 16), not {cfg.image_size}")
        return {"img_size": cfg.image_size}


class EfficientNetB0Student(TimmStudent):
    arch, timm_name, gradcam_path = "efficientnet-b0", "efficientnet_b0", "bn2"


class ConvNeXtTinyStudent(TimmStudent):
    arch, timm_name, gradcam_path = "convnext-tiny", "convnext_tiny", "stages.3"


# -- detectors from the literature ------------------------------------------------------------
def _own_weights(model: ZooStudent) -> None:
    """``cfg.pretrained`` of a model without ImageNet weights: None, or a file of its backbone."""
    if model.cfg.pretrained == IMAGENET:
        model.pretrained_normalisation()  # raises: no ImageNet weights
    if model.cfg.pretrained:
        model.backbone.load_state_dict(_load_state_dict(model.cfg.pretrained))
        log.info("student: %s backbone weights from %s", model.arch, model.cfg.pretrained)


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """Neighbouring-pixel relationships ``x - up(down(x))``: nearest downsampling by 2 then
    nearest upsampling by 2 (zero on the top-left pixel of every 2x2 block; exports to ONNX
    as two Resize ops)."""
    down = F.interpolate(x, scale_factor=0.5, mode="nearest")
    return x - F.interpolate(down, scale_factor=2.0, mode="nearest")


class NPRStudent(ZooStudent):
    """NPR (Tan et al., CVPR 2024, "Rethinking the up-sampling operations in CNN-based
    generative network for generalizable deepfake detection").

    As in the authors' ``networks/resnet.py``: the input is :func:`npr_residual` scaled by 2/3,
    then a 3x3 stride-2 convolution (not ResNet50's 7x7), BN, ReLU, 3x3 stride-2 max-pool and
    ResNet50's ``layer1`` + ``layer2`` (torchvision Bottlenecks, stride on the 3x3, the same
    Kaiming fan-out init), global average pool -> 512 features. Simplified: only the network
    is the paper's (training recipe, augmentations and crops are the run's own); the image size
    must be even (the reference crops odd sizes). No ImageNet weights (trained from scratch).
    """

    arch, gradcam_path = "npr", "layer2.3"

    def __init__(self, cfg: StudentConfig):
        from torchvision.models.resnet import Bottleneck, ResNet

        if cfg.image_size % 2:
            raise ValueError(f"npr needs an even image_size, not {cfg.image_size}")
        net = ResNet(Bottleneck, [3, 4, 1, 1])  # layer3/layer4 are dropped below
        conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
        parts = {"conv1": conv1, "bn1": net.bn1, "relu": net.relu, "maxpool": net.maxpool,
                 "layer1": net.layer1, "layer2": net.layer2, "pool": nn.AdaptiveAvgPool2d(1),
                 "flatten": nn.Flatten(1)}  # fmt: skip
        super().__init__(cfg, nn.Sequential(OrderedDict(parts)), 512)
        _own_weights(self)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(npr_residual(x) * (2.0 / 3.0))


class SpectrumStudent(ZooStudent):
    """Spectrum detector (Frank et al., ICML 2020; Durall et al., 2020): a linear classifier
    over the log-magnitude 2-D DFT of the grayscale image (Frank et al. use the DCT, Durall et
    al. its azimuthal average; this is the plain full-DFT variant).

    :meth:`log_spectrum`: gray = 0.299 R + 0.587 G + 0.114 B of the normalised input, 2-D DFT,
    fftshifted (DC at ``(size // 2, size // 2)``), ``0.5 * log(|X|^2 + eps^2)`` (~ ``log(|X| +
    eps)``, eps = 1e-3, smooth at 0). The DFT is fixed matrix products (cos/sin matrices with
    the fftshift folded into their rows; non-persistent buffers), not ``torch.fft``: the ONNX
    export is plain MatMuls, with parity. ``features``: the flattened spectrum standardised by
    a BatchNorm (running statistics; its affine weights are the only backbone parameters),
    feature_dim = size². Grad-CAM does not apply (read ``head.weight`` as a size x size map).
    """

    arch = "spectrum"
    eps = 1e-3

    def __init__(self, cfg: StudentConfig):
        n = cfg.image_size
        super().__init__(cfg, nn.BatchNorm1d(n * n), n * n)
        k = torch.arange(n, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(k, k).remainder(n) / n
        for name, fn in (("dft_cos", torch.cos), ("dft_sin", torch.sin)):
            self.register_buffer(name, torch.roll(fn(angle), n // 2, 0).float(), persistent=False)
        gray = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        self.register_buffer("gray", gray, persistent=False)
        _own_weights(self)

    def log_spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """(N, size, size) fftshifted log-magnitude spectrum of the grayscale image."""
        g, c, s = (x * self.gray).sum(1), self.dft_cos, self.dft_sin
        gc, gs = g @ c.T, g @ s.T
        re, im = c @ gc - s @ gs, c @ gs + s @ gc  # im up to its sign
        return 0.5 * torch.log(re * re + im * im + self.eps**2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.log_spectrum(x).flatten(1))

    def gradcam_layer(self) -> nn.Module:
        raise ValueError("spectrum: no spatial feature map for Grad-CAM (see head.weight)")


for _cls in (ResNet50Student, XceptionStudent, DeiTSmallStudent, EfficientNetB0Student,
             ConvNeXtTinyStudent, NPRStudent, SpectrumStudent):  # fmt: skip
    STUDENTS.register(_cls.arch, _cls)
