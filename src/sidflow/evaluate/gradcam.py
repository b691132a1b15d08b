"""Grad-CAM gallery: where the student looked, for correct and wrong test predictions.

Uses the ``grad-cam`` package (``pytorch_grad_cam``), not hand-written hooks. For each
generator a fixed, seeded sample of up to ``per_group`` correct and ``per_group`` wrong
test predictions (at the student's validation-calibrated threshold) is explained: the
heatmap is the evidence for the class the student predicted. Each picture is the
processed input and its overlay side by side, upscaled to ``size`` pixels for viewing.

Writes ``<out_dir>/index.json`` (one record per picture) and the PNG files beside it.
Run: ``rule gradcam`` (``workflow/rules/gradcam.smk``), or
``gradcam_gallery("results/demo/models/student-kd", ...)`` from Python.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from sidflow.data.images import decode_jpeg_array
from sidflow.data.loading import load_images, to_tensor
from sidflow.io import atomic_dir, write_json

log = logging.getLogger(__name__)


def pick_examples(
    scores: pd.DataFrame, threshold: float, per_group: int, seed: int
) -> pd.DataFrame:
    """Seeded sample of correct and wrong test predictions per generator."""
    test = scores[scores["split"] == "test"].copy()
    test["pred"] = (test["p_fake"] >= threshold).astype(int)
    test["correct"] = test["pred"] == test["label"]
    picks = []
    for _, g in test.groupby(["dataset", "generator", "correct"], sort=True):
        g = g.sort_values("image_id")  # the sample must not depend on file order
        picks.append(g.sample(n=min(per_group, len(g)), random_state=seed))
    if not picks:
        return test.head(0)
    return pd.concat(picks, ignore_index=True)


def target_layer(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The last block of ``backbone.<name>`` (e.g. layer3, layer4) of a ResNet student; for
    the zoo's other architectures their own ``gradcam_layer()`` (the last conv stage)."""
    if not re.fullmatch(r"layer[1-4]", name):
        raise ValueError(f"gradcam layer must be layer1..layer4, got {name!r}")
    if not hasattr(model.backbone, name):
        return model.gradcam_layer()
    return getattr(model.backbone, name)[-1]


def _side_by_side(rgb: np.ndarray, cam: np.ndarray, size: int) -> bytes:
    from pytorch_grad_cam.utils.image import show_cam_on_image

    overlay = show_cam_on_image(
        rgb.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=0.55
    )
    pair = np.concatenate([rgb, overlay], axis=1)
    img = Image.fromarray(pair).resize((2 * size, size), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def cam_pictures(model: torch.nn.Module, meta: dict, jpegs: list[bytes], preds: list[int],
                 layer: str = "layer3", size: int = 128) -> list[bytes]:  # fmt: skip
    """Grad-CAM of a student (``load_student``'s model and meta) for processed images: one PNG
    per image, the input and its overlay side by side; the evidence for class ``preds[i]``."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from sidflow.models.export import LogitsOnly

    model = model.float().eval()
    cfg = meta["student"]
    x = to_tensor(list(jpegs), cfg["image_mean"], cfg["image_std"])
    targets = [ClassifierOutputTarget(int(p)) for p in preds]
    reshape = getattr(model, "gradcam_reshape", None)  # a ViT's tokens -> map
    with GradCAM(model=LogitsOnly(model), target_layers=[target_layer(model, layer)],
                 reshape_transform=reshape) as cam:  # fmt: skip
        maps = cam(input_tensor=x, targets=targets)
    return [_side_by_side(decode_jpeg_array(j), m, size) for j, m in zip(jpegs, maps, strict=True)]


def gradcam_gallery(
    model_dir: str | Path,
    manifests: list[str],
    processed_dirs: list[str],
    score_paths: list[str],
    out_dir: str | Path,
    per_group: int = 4,
    layer: str = "layer4",
    size: int = 128,
    seed: int = 0,
) -> list[dict]:
    """Explain a fixed sample of a student's test predictions; returns the index records."""
    from sidflow.models.student import load_student

    model, meta = load_student(model_dir)
    try:
        target_layer(model, layer)
    except ValueError as exc:  # e.g. the spectrum detector: no spatial map to explain
        log.warning("%s: no Grad-CAM gallery (%s)", model_dir, exc)
        with atomic_dir(out_dir) as tmp:
            write_json(tmp / "index.json", {"layer": layer, "threshold": float(meta["threshold"]),
                                            "per_group": per_group, "seed": seed, "images": [],
                                            "unsupported": str(exc)})  # fmt: skip
        return []
    scores = pd.concat([pd.read_parquet(p) for p in score_paths], ignore_index=True)
    picks = pick_examples(scores, float(meta["threshold"]), per_group, seed)
    records: list[dict] = []
    with atomic_dir(out_dir) as tmp:
        if len(picks):
            images = load_images(manifests, processed_dirs, ("test",))
            images = images.set_index("image_id").loc[picks["image_id"]].reset_index()
            pictures = cam_pictures(
                model, meta, list(images["jpeg"]), list(picks["pred"]), layer, size
            )
            for i, row in enumerate(picks.to_dict("records")):
                name = f"{row['dataset']}-{row['generator']}-{'ok' if row['correct'] else 'wrong'}-{i:03d}.png"
                (tmp / name).write_bytes(pictures[i])
                records.append({"file": name, "image_id": row["image_id"], "dataset": row["dataset"],
                                "generator": row["generator"], "label": int(row["label"]),
                                "pred": int(row["pred"]), "p_fake": float(row["p_fake"]),
                                "correct": bool(row["correct"])})  # fmt: skip
        write_json(tmp / "index.json", {"layer": layer, "threshold": float(meta["threshold"]),
                                        "per_group": per_group, "seed": seed, "images": records})  # fmt: skip
    log.info("%s: %d Grad-CAM pictures (%s) in %s", model_dir, len(records), layer, out_dir)
    return records
