"""Frozen CLIP image encoder that yields the CLS token of every transformer block (RINE).

Real checkpoint: ``openai/clip-vit-large-patch14`` (any CLIP size works; set
``checkpoint`` to the id with the Hugging Face cache filled and ``HF_HUB_OFFLINE=1``,
or to a local folder). The embedded default ``tiny`` builds the same class
(``transformers.CLIPVisionModel``) at a few blocks, randomly initialised from the
run's seed: offline there are no pretrained CLIP weights, so the demo's RINE sees
random (but fixed) features and its numbers say nothing about CLIP's.

As in the paper's reference implementation, a block's representation is the CLS
token of its second layer norm's output (the normalised stream the block's MLP
reads), taken with forward hooks, so one encoder pass gives all ``n`` blocks::

    enc = build_clip(ClipConfig(checkpoint="tiny"))
    tokens = block_cls_tokens(enc, pixel_values)      # N x n_blocks x hidden
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipConfig:
    """``checkpoint``: ``tiny`` | a Hugging Face id | a folder. ``image_size``: the
    encoder's input side (processed images are resized to it, bicubic)."""

    checkpoint: str = "tiny"
    image_size: int = 32
    tiny: dict = field(
        default_factory=lambda: {"hidden_size": 64, "layers": 4, "heads": 4, "patch_size": 4}
    )
    seed: int = 0


def build_clip(cfg: ClipConfig):
    """A frozen ``CLIPVisionModel`` in eval mode."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if cfg.checkpoint == "tiny":
        t = cfg.tiny
        torch.manual_seed(cfg.seed)
        model = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=t["hidden_size"],
                intermediate_size=4 * t["hidden_size"],
                num_hidden_layers=t["layers"],
                num_attention_heads=t["heads"],
                patch_size=t["patch_size"],
                image_size=cfg.image_size,
            )
        )
    else:
        model = CLIPVisionModel.from_pretrained(cfg.checkpoint)
    model.requires_grad_(False)
    return model.eval()


def save_clip(model, cfg: ClipConfig, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir / "model", safe_serialization=True)
    (out_dir / "clip.json").write_text(json.dumps(asdict(cfg), indent=2))


def load_clip(model_dir: str | Path):
    """``(model, ClipConfig)`` from a folder written by :func:`save_clip` (safetensors)."""
    from transformers import CLIPVisionModel

    model_dir = Path(model_dir)
    cfg = ClipConfig(**json.loads((model_dir / "clip.json").read_text()))
    model = CLIPVisionModel.from_pretrained(model_dir / "model", use_safetensors=True)
    model.requires_grad_(False)
    return model.eval(), cfg


def clip_pixels(arr: np.ndarray, image_size: int) -> torch.Tensor:
    """N x H x W x 3 uint8 → normalised N x 3 x S x S float tensor (bicubic resize)."""
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False)
        x = x.clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def encoder_layers(model):
    """The transformer blocks (transformers 4 nests them under ``vision_model``; 5 does not)."""
    return getattr(model, "vision_model", model).encoder.layers


@torch.no_grad()
def block_cls_tokens(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """CLS token of every encoder block's ``layer_norm2`` output: N x n_blocks x hidden."""
    grabbed: list[torch.Tensor] = []
    hooks = [
        layer.layer_norm2.register_forward_hook(lambda _m, _i, out: grabbed.append(out[:, 0]))
        for layer in encoder_layers(model)
    ]
    try:
        model(pixel_values=pixel_values)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(grabbed, dim=1).float()
