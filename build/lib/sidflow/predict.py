"""Apply a trained student to image files with exactly the training preprocessing.

    sidflow predict --model results/demo/models/student-kd --output preds.csv photos/ extra.png

Streams through folders in batches; an unreadable file is reported (verdict
``quarantined`` with its reason) instead of stopping the run.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from sidflow.data.images import BadImageError, normalize_image
from sidflow.data.loading import to_tensor
from sidflow.data.sources import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


def expand_paths(items: Iterable[str]) -> Iterator[Path]:
    """Files, folders (recursively, image suffixes only) and glob patterns, in order."""
    for item in items:
        p = Path(item)
        if p.is_dir():
            yield from sorted(
                q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES
            )
        elif p.exists():
            yield p
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, folder or glob match")
            yield from (Path(m) for m in matches if Path(m).is_file())


def predict_paths(model_dir: str | Path, items: Iterable[str], batch_size: int = 64, device: str = "cpu",
                  progress: bool = False) -> Iterator[dict]:  # fmt: skip
    """Yield one result dict per input: path, p_fake, verdict, threshold, model, reason."""
    from sidflow.models.student import load_student

    model, meta = load_student(model_dir)
    model.to(device)
    pre = meta.get("preprocess") or {}
    size, quality = (
        int(pre.get("image_size", meta["student"]["image_size"])),
        int(pre.get("jpeg_quality", 90)),
    )
    max_pixels = int(pre.get("max_pixels", 64_000_000))
    mean, std = meta["student"]["image_mean"], meta["student"]["image_std"]
    threshold, name = float(meta["threshold"]), str(model_dir)
    paths = expand_paths(items)
    if progress:
        from tqdm import tqdm

        paths = tqdm(paths, unit="img")
    batch: list[tuple[Path, bytes]] = []

    def flush():
        x = to_tensor([j for _, j in batch], mean, std).to(device)
        with torch.no_grad():
            p = torch.softmax(model(x)["logits"].float(), 1)[:, 1].cpu().numpy()
        for (path, _), pf in zip(batch, p, strict=True):
            yield {"path": str(path), "p_fake": round(float(pf), 6), "verdict": "fake" if pf >= threshold else "real",
                   "threshold": threshold, "model": name, "reason": ""}  # fmt: skip
        batch.clear()

    for path in paths:
        try:
            norm = normalize_image(path.read_bytes(), size, quality, max_pixels)
        except (BadImageError, OSError) as exc:
            reason = str(exc) if isinstance(exc, BadImageError) else f"unreadable file: {exc}"
            yield {"path": str(path), "p_fake": None, "verdict": "quarantined", "threshold": threshold,
                   "model": name, "reason": reason}  # fmt: skip
            continue
        batch.append((path, norm.jpeg))
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()
