"""Every detector writes the same scores table; evaluation reads nothing else.

Columns: ``image_id, detector, dataset, generator, split, label, perturbation, p_fake``,
plus ``object_class`` (the manifest's, may be null) and ``object_pred`` (a detector's
object-class head's answer, null for detectors without one).
Written to ``results/<experiment>/scores/<detector>/<dataset>/<generator>/<perturbation>.parquet``
for the ``val`` and ``test`` splits.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sidflow.io import write_parquet
from sidflow.tables import SCORE_SPLITS, SCORES_SCHEMA, VERDICTS, scores_table


def score_teacher_from_cache(
    cache_path: str | Path, manifest: str | Path, detector: str, out_path: str | Path,
    caption_detector: str | None = None, caption_out: str | Path | None = None,
) -> int:  # fmt: skip
    """A teacher's scores come straight from its cache: it is never re-run here (nor is
    torch imported: this job only reads Parquet). With ``caption_out``, also the scores of
    ``caption_detector``: the same teacher judged by its *generated* caption (verdict
    ``real``/``fake``/``other``), with the likelihood score as p_fake for AP/AUC."""
    man = pd.read_parquet(manifest)
    man = man[man["split"].isin(SCORE_SPLITS)]
    cache = pd.read_parquet(cache_path, columns=["image_id", "p_fake", "caption_class"])
    merged = man.merge(cache, on="image_id", how="left", validate="one_to_one")
    if merged["p_fake"].isna().any():
        raise ValueError(
            f"{cache_path}: {int(merged['p_fake'].isna().sum())} rows of {manifest} are not cached"
        )
    write_parquet(out_path, scores_table(merged, merged["p_fake"], detector, "none"), SCORES_SCHEMA)
    if caption_out is not None:
        verdict = merged["caption_class"].where(merged["caption_class"].isin(VERDICTS), "other")
        table = scores_table(
            merged, merged["p_fake"], caption_detector, "none", verdict=verdict.to_numpy()
        )
        write_parquet(caption_out, table, SCORES_SCHEMA)
    return len(merged)


def score_student(
    model_dir: str | Path, manifest: str | Path, processed_dir: str | Path, detector: str, out_path: str | Path,
    device: str = "auto", batch_size: int = 256, perturbation: str = "none", chain: list | None = None,
) -> int:  # fmt: skip
    """A student's scores on the val/test images of one generator, optionally after a
    test-time perturbation ``chain`` (see :mod:`sidflow.data.perturb`)."""
    views = {perturbation: (out_path, chain)}
    return score_student_views(
        model_dir, manifest, processed_dir, detector, views, device, batch_size
    )[perturbation]


def score_student_views(
    model_dir: str | Path, manifest: str | Path, processed_dir: str | Path, detector: str,
    views: dict[str, tuple[str | Path, list | None]], device: str = "auto", batch_size: int = 256,
) -> dict[str, int]:  # fmt: skip
    """The score_student step: one generator's scores under every view ``{perturbation:
    (out_path, chain)}`` (``none``: clean val + test; a chain: its test images perturbed),
    loading the model and the images once. Returns the rows written per view."""
    import torch

    from sidflow.data.loading import ImageBank, load_images
    from sidflow.devices import amp_dtype, select_device
    from sidflow.models.student import load_student, predict

    model, meta = load_student(model_dir)
    dev = select_device(device)
    model.to(dev).to(memory_format=torch.channels_last)
    cfg, amp = meta["student"], amp_dtype(dev, meta["distill"].get("precision", "auto"))
    names = cfg.get("object_classes") or []
    clean = any(not chain for _, chain in views.values())
    # perturbed copies only need the test split: thresholds come from clean validation data
    every = load_images([manifest], [processed_dir], SCORE_SPLITS if clean else ("test",))
    rows = {}
    for perturbation, (out_path, chain) in views.items():
        if chain:
            from sidflow.data.perturb import perturbed_arrays

            images = every[every["split"] == "test"].reset_index(drop=True)
            if images.empty:
                raise ValueError(f"{manifest}: no test images to score under {perturbation!r}")
            pixels = perturbed_arrays(images["jpeg"], chain)
            bank = ImageBank.from_arrays(pixels, cfg["image_mean"], cfg["image_std"])
        else:
            images = every
            bank = ImageBank(images["jpeg"], cfg["image_mean"], cfg["image_std"], max_bytes=0)
        preds = predict(model, bank, batch_size, dev, amp)
        obj = [names[i] for i in preds["object_pred"]] if "object_pred" in preds else None
        table = scores_table(images, preds["p_fake"], detector, perturbation, obj)
        write_parquet(out_path, table, SCORES_SCHEMA)
        rows[perturbation] = len(images)
    return rows
