"""Every detector writes the same scores table; evaluation reads nothing else.

Columns: ``image_id, detector, dataset, generator, split, label, perturbation, p_fake``,
plus ``object_class`` (the manifest's, may be null), ``object_pred`` (a detector's
object-class head's answer), ``verdict`` (a detector's own hard decision) and
``generator_pred`` (an attribution head's answer: ``real`` or ``dataset/generator``), null for
detectors without them.
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


def iter_views(
    manifest, processed_dir, views: dict[str, tuple[str | Path, list | None]], fold=None
):
    """``(perturbation, out_path, images, pixels)`` per view ``{perturbation: (out_path,
    chain)}`` of one generator, reading its images once: the clean view has the val + test
    rows and ``pixels`` None (score the ``jpeg`` bytes); a chain has the test rows and their
    perturbed HxWx3 uint8 ``pixels`` (thresholds come from clean validation data).
    ``fold`` = (f, k): the rows as k-fold model f sees them (:mod:`sidflow.data.folds`)."""
    from sidflow.data.loading import load_images

    clean = any(not chain for _, chain in views.values())
    wanted = SCORE_SPLITS if clean else ("test",)
    if fold is None:
        every = load_images([manifest], [processed_dir], wanted)
    else:  # a fold may hold none of a small generator's images: then its tables are empty
        from sidflow.data.folds import fold_view

        man = fold_view(pd.read_parquet(manifest), *fold, source=str(manifest))
        man = man[man["split"].isin(wanted)]
        every = load_images([man], [processed_dir]) if len(man) else man.assign(jpeg=[])
    for perturbation, (out_path, chain) in views.items():
        if not chain:
            yield perturbation, out_path, every, None
            continue
        from sidflow.data.perturb import perturbed_arrays

        images = every[every["split"] == "test"].reset_index(drop=True)
        if images.empty:
            if fold is not None:  # a small generator may have no image in this fold
                yield perturbation, out_path, images, None
                continue
            raise ValueError(f"{manifest}: no test images to score under {perturbation!r}")
        yield perturbation, out_path, images, perturbed_arrays(images["jpeg"], chain)


def score_student_views(
    model_dir: str | Path, manifest: str | Path, processed_dir: str | Path, detector: str,
    views: dict[str, tuple[str | Path, list | None]], device: str = "auto", batch_size: int = 256,
) -> dict[str, int]:  # fmt: skip
    """The score_student step: one generator's scores under every view ``{perturbation:
    (out_path, chain)}`` (``none``: clean val + test; a chain: its test images perturbed),
    loading the model and the images once. Returns the rows written per view.

    A k-fold model folder (:mod:`sidflow.train.kfold`): each fold's model scores the images of
    its own test part and validation part, with its hard ``verdict`` at its own validation
    threshold; the folds' tables are concatenated, so every image is a test row once."""
    from sidflow.data.folds import FOLDS_FILE, fold_name
    from sidflow.io import read_json

    folds_file = Path(model_dir) / FOLDS_FILE
    if not folds_file.is_file():
        tables = _score_views(
            model_dir, manifest, processed_dir, detector, views, device, batch_size
        )
    else:
        k = int(read_json(folds_file)["k"])
        parts = [_score_views(Path(model_dir) / fold_name(f), manifest, processed_dir, detector, views,
                              device, batch_size, fold=(f, k)) for f in range(k)]  # fmt: skip
        tables = {v: pd.concat([p[v] for p in parts], ignore_index=True) for v in views}
    for perturbation, (out_path, _) in views.items():
        write_parquet(out_path, tables[perturbation], SCORES_SCHEMA)
    return {v: len(t) for v, t in tables.items()}


def _score_views(model_dir, manifest, processed_dir, detector, views, device, batch_size,
                 fold=None) -> dict[str, pd.DataFrame]:  # fmt: skip
    """One student model's scores table per view (with ``fold``: verdicts at its threshold)."""
    import numpy as np
    import torch

    from sidflow.data.loading import ImageBank
    from sidflow.devices import amp_dtype, select_device
    from sidflow.models.student import load_student, predict

    model, meta = load_student(model_dir)
    dev = select_device(device)
    model.to(dev).to(memory_format=torch.channels_last)
    cfg, amp = meta["student"], amp_dtype(dev, meta["distill"].get("precision", "auto"))
    names = cfg.get("object_classes") or []
    # the attribution head's classes: real + dataset/generator
    sources = cfg.get("generators") or []
    tables = {}
    for perturbation, _, images, pixels in iter_views(manifest, processed_dir, views, fold):
        if images.empty:
            tables[perturbation] = scores_table(images, np.zeros(0), detector, perturbation)
            continue
        if pixels is not None:
            bank = ImageBank.from_arrays(pixels, cfg["image_mean"], cfg["image_std"])
        else:
            bank = ImageBank(images["jpeg"], cfg["image_mean"], cfg["image_std"], max_bytes=0)
        preds = predict(model, bank, batch_size, dev, amp)
        obj = [names[i] for i in preds["object_pred"]] if "object_pred" in preds else None
        gen = [sources[i] for i in preds["generator_pred"]] if "generator_pred" in preds else None
        verdict = (np.where(preds["p_fake"] >= meta["threshold"], "fake", "real")
                   if fold is not None else None)  # fmt: skip
        tables[perturbation] = scores_table(
            images, preds["p_fake"], detector, perturbation, obj, verdict, generator_pred=gen
        )
    return tables


def score_explainer_views(
    model_dir: str | Path, manifest: str | Path, processed_dir: str | Path, detector: str,
    views: dict[str, tuple[str | Path, list | None]], device: str = "auto", batch_size: int = 32,
) -> dict[str, int]:  # fmt: skip
    """The score_explainer step: the explainer as a detector on one generator's images, under
    every view. ``p_fake`` = p("Fake") against p("Real") as the first answer token to the
    true/false question (:meth:`sidflow.models.explainer.Explainer.fake_probability`)."""
    import numpy as np
    from PIL import Image

    from sidflow.data.images import decode_jpeg_array
    from sidflow.devices import select_device
    from sidflow.models.explainer import Explainer

    explainer = Explainer.load(Path(model_dir) / "model").to(select_device(device))
    rows = {}
    for perturbation, out_path, images, pixels in iter_views(manifest, processed_dir, views):
        if pixels is not None:
            pictures = [Image.fromarray(a) for a in pixels]
        else:
            pictures = [Image.fromarray(decode_jpeg_array(b)) for b in images["jpeg"]]
        p = [explainer.fake_probability(pictures[i : i + batch_size])
             for i in range(0, len(pictures), batch_size)]  # fmt: skip
        p_fake = np.concatenate(p) if p else np.zeros(0, dtype="float32")
        write_parquet(out_path, scores_table(images, p_fake, detector, perturbation), SCORES_SCHEMA)
        rows[perturbation] = len(images)
    return rows
