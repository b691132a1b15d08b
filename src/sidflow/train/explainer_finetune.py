"""The ``explainer_finetune`` step: the explainer, LoRA-fine-tuned on conversations.

Conversations come from two sources (``explainer.conversations``):

* ``shipped``: the study's hand-written conversations (``finetune/conversations.json`` of the
  unpacked VQA archive, :mod:`sidflow.data.vqa_data`);
* ``template``: written from this run's own **training-split** images (label, generator,
  object class): an explanation in a fixed template and the true/false question answered
  "Real"/"Fake" (:func:`sidflow.train.explainer.template_conversations`). Template answers
  are weak supervision: they teach the verdict and the answer format, not visual reasoning.

The folder written (``results/<experiment>/models/explainer``)::

    model/      the fine-tuned explainer (LoRA merged; safetensors + processor)
    base/       the explainer before fine-tuning (tiny builds only; a real checkpoint is its id)
    card.json   settings, conversation counts per source and generator, history, cost

Run by the rule, or by hand::

    explainer_finetune(cfg["explainer"], manifests, processed_dirs, "data/vqa/aigen-vqa",
                       "results/demo/models/explainer", seed=0)
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from sidflow.data.images import decode_jpeg_array
from sidflow.data.loading import load_images
from sidflow.data.vqa_data import CONVERSATIONS, QUESTION_SETS
from sidflow.devices import parameter_counts, seed_everything, select_device
from sidflow.io import atomic_dir, read_json, write_json
from sidflow.models.explainer import Explainer, ExplainerConfig
from sidflow.train.explainer import (
    finetune_explainer,
    load_conversations,
    template_conversations,
    true_false_conversations,
)

log = logging.getLogger(__name__)


def explainer_config(settings: dict, seed: int) -> ExplainerConfig:
    """The model config from the ``explainer`` config block (``checkpoint: tiny`` = the tiny
    offline architecture of ``tiny``)."""
    ckpt = settings.get("checkpoint", "tiny")
    lora = settings.get("lora", {})
    return ExplainerConfig.from_dict({
        **settings.get("tiny", {}), "checkpoint": None if ckpt == "tiny" else ckpt, "seed": seed,
        "lora_r": lora.get("r", 8), "lora_alpha": lora.get("alpha", 16),
        "lora_dropout": lora.get("dropout", 0.05), "lora_targets": lora.get("targets", ("q_proj", "v_proj")),
        "train_projector": lora.get("train_projector", True),
        "max_new_tokens": settings.get("vqa", {}).get("max_new_tokens", 8),
    })  # fmt: skip


def run_template_conversations(
    manifests: list[str], processed_dirs: list[str], per_generator: int, seed: int
) -> list[dict]:
    """Template conversations from up to ``per_generator`` training-split images of each
    generator (a seeded, balanced-per-generator sample): each image is explained once and
    asked the true/false question once."""
    if per_generator <= 0:
        return []
    rows = load_images(manifests, processed_dirs, ["train"])
    rng = np.random.default_rng([seed, 11])
    picked = []
    for _, group in rows.groupby(["dataset", "generator"], sort=True):
        take = rng.permutation(len(group))[:per_generator]
        picked.append(group.iloc[np.sort(take)])
    if not picked:
        return []
    rows = pd.concat(picked, ignore_index=True)
    obj = rows["object_class"] if "object_class" in rows else [None] * len(rows)
    generators = [
        None if y == 0 else g for y, g in zip(rows["label"], rows["generator"], strict=True)
    ]
    records = template_conversations(
        {"id": i, "image": Image.fromarray(decode_jpeg_array(j)), "label": int(y), "generator": g,
         "object_class": o}
        for i, j, y, g, o in zip(rows["image_id"], rows["jpeg"], rows["label"], generators, obj, strict=True)
    )  # fmt: skip
    return records + true_false_conversations(records, rows["label"])


def vocabulary(records: list[dict], vqa_dir: Path | None) -> list[str]:
    """Texts the tiny word-level tokenizer is built from: every conversation and, when the
    VQA archive is there, every benchmark question (so no benchmark word is unknown)."""
    texts = [r["question"] for r in records] + [r["answer"] for r in records]
    if vqa_dir is not None:
        for rel in QUESTION_SETS.values():
            texts += [q["question"] for q in read_json(vqa_dir / rel)]
    return texts


def explainer_finetune(
    settings: dict, manifests: list[str], processed_dirs: list[str], vqa_dir: str | Path | None,
    out_dir: str | Path, seed: int = 0,
) -> dict:  # fmt: skip
    """Fine-tune the explainer of ``settings`` on the configured conversation sources (training
    split only) and write ``out_dir`` atomically. Returns the card."""
    seed_everything(seed)
    vqa_dir = Path(vqa_dir) if vqa_dir else None
    sources = list(settings.get("conversations", ["shipped", "template"]))
    records: list[dict] = []
    if "shipped" in sources and vqa_dir is not None:
        records += [dict(r, source="shipped") for r in load_conversations(vqa_dir / CONVERSATIONS)]
    if "template" in sources:
        made = run_template_conversations(
            manifests, processed_dirs, settings.get("template_images", 100), seed
        )
        records += [dict(r, source="template") for r in made]
    if not records:
        raise ValueError(
            f"explainer: no conversations to fine-tune on (sources {sources}; VQA archive "
            f"{'present' if vqa_dir else 'absent'}); add 'template' or set explainer.vqa.archive"
        )
    cfg = explainer_config(settings, seed)
    ft = settings.get("finetune", {})
    device = select_device(ft.get("device", "auto"))
    explainer = Explainer.build(cfg, vocabulary(records, vqa_dir)).to(device)
    counts = Counter((r["source"], str(r.get("generator") or "natural")) for r in records)
    log.info("explainer: %d conversations %s on %s", len(records), dict(counts), device)
    with atomic_dir(out_dir) as tmp:
        if cfg.checkpoint is None:  # the "before" model of the VQA comparison
            explainer.save(tmp / "base")
        t0 = time.perf_counter()
        result = finetune_explainer(explainer, records, epochs=ft.get("epochs", 6),
                                    lr=ft.get("lr", 2e-4), batch_size=ft.get("batch_size", 4),
                                    seed=seed, log=log, max_steps=ft.get("max_steps"))  # fmt: skip
        explainer.save(tmp / "model")
        card = {
            "detector": "explainer",
            "checkpoint": settings.get("checkpoint", "tiny"),
            "base": "base" if cfg.checkpoint is None else cfg.checkpoint,
            "mode": f"LoRA r={cfg.lora_r}" if cfg.lora_r > 0 else "full language model",
            "settings": settings,
            "seed": seed,
            "conversations": {
                "total": len(records),
                "by_source": dict(Counter(r["source"] for r in records)),
                "by_source_and_generator": {f"{s}/{g}": n for (s, g), n in sorted(counts.items())},
            },
            "history": result["history"],
            "steps": result["steps"],
            "seconds": round(time.perf_counter() - t0, 1),
            **parameter_counts(explainer.model),
            "trainable_params": result["trainable_params"],
            "split": "train",
        }
        write_json(tmp / "card.json", card)
    return card
