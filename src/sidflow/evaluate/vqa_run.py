"""The ``vqa_eval`` and ``explain_gallery`` steps: the explainer judged and shown.

``vqa_eval`` answers every question of both VQA sets (true/false, multiple-choice) with the
explainer **before** fine-tuning (``base``) and **after** (``finetuned``), parses and scores
the answers with :mod:`sidflow.evaluate.vqa` (anything that is not an option is ``other`` and
counts as wrong), and adds the published model's recorded answers (``published-base``,
``published-epoch6``) so the report puts the run beside the study's own figures::

    vqa_eval("results/demo/models/explainer", "data/vqa/aigen-vqa",
             "results/demo/vqa/answers.parquet", "results/demo/vqa/errors.parquet")

``explain_gallery`` asks the explainer why, for the test images the student's Grad-CAM
gallery shows (or a seeded sample per generator without one), and writes
``gallery.json`` (explanation, explainer p_fake, the student's verdict and picture).
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from sidflow.data.images import decode_jpeg_array
from sidflow.data.loading import load_images
from sidflow.data.vqa_data import QUESTION_SETS
from sidflow.devices import select_device
from sidflow.evaluate.vqa import error_table, load_answers, load_questions, score_answers
from sidflow.io import read_json, write_json, write_parquet
from sidflow.models.explainer import Explainer, as_rgb
from sidflow.train.explainer import EXPLAIN_QUESTION

log = logging.getLogger(__name__)

# the published model's recorded answers scored beside the run (model name -> file per set)
PUBLISHED = {
    "published-base": {"true-false": "true-false.base.json", "multiple-choice": "multiple-choice.base.json"},
    "published-epoch6": {"true-false": "true-false.finetuned-epoch6.json",
                         "multiple-choice": "multiple-choice.finetuned-epoch6.json"},
}  # fmt: skip


def load_explainers(model_dir: str | Path, device: str = "auto") -> dict[str, Explainer]:
    """``{"base": before fine-tuning, "finetuned": after}`` from an explainer_finetune folder."""
    model_dir = Path(model_dir)
    card = read_json(model_dir / "card.json")
    dev = select_device(device)
    base = model_dir / card["base"] if card["base"] == "base" else card["base"]
    return {"base": Explainer.load(base).to(dev), "finetuned": Explainer.load(model_dir / "model").to(dev)}  # fmt: skip


def answer_all(explainer: Explainer, images: list, questions: list[str], batch_size: int,
               max_new_tokens: int) -> list[str]:  # fmt: skip
    """Greedy answers to ``questions`` about ``images`` (paths or PIL images), in batches."""
    out: list[str] = []
    for i in range(0, len(questions), batch_size):
        out += explainer.answer(
            images[i : i + batch_size], questions[i : i + batch_size], max_new_tokens
        )
    return out


def vqa_eval(
    model_dir: str | Path, vqa_dir: str | Path, answers_out: str | Path, errors_out: str | Path,
    max_new_tokens: int = 8, batch_size: int = 8, device: str = "auto",
) -> pd.DataFrame:  # fmt: skip
    """Answer and score both question sets with the base and fine-tuned explainer (plus the
    published recorded answers); write the answers and the error table. Returns the errors."""
    vqa_dir = Path(vqa_dir)
    explainers = load_explainers(model_dir, device)
    scored = []
    for kind, rel in QUESTION_SETS.items():
        questions = load_questions(vqa_dir / rel)
        pictures = [as_rgb(p) for p in questions["image"]]  # read once for both explainers
        for name, explainer in explainers.items():
            texts = answer_all(
                explainer, pictures, list(questions["question"]), batch_size, max_new_tokens
            )
            scored.append(
                score_answers(questions, dict(zip(questions["id"], texts, strict=True)), name)
            )
            log.info("vqa %s %s: error %.3f", kind, name, 1 - scored[-1]["correct"].mean())
        for name, files in PUBLISHED.items():
            path = vqa_dir / "recorded-answers" / files[kind]
            if path.is_file():
                scored.append(score_answers(questions, load_answers(path), name))
    answers = pd.concat(scored, ignore_index=True)
    errors = error_table(answers)
    write_parquet(answers_out, answers)
    write_parquet(errors_out, errors)
    return errors


def gallery_picks(gradcam_index: dict | None, test: pd.DataFrame, per_generator: int,
                  seed: int) -> pd.DataFrame:  # fmt: skip
    """The images to explain: the Grad-CAM gallery's (with the student's verdict and
    picture), else a seeded sample of ``per_generator`` test images per generator."""
    if gradcam_index and gradcam_index.get("images"):
        picks = pd.DataFrame(gradcam_index["images"]).rename(columns={"p_fake": "student_p_fake",
                                                                       "correct": "student_correct"})  # fmt: skip
        return picks[picks["image_id"].isin(set(test["image_id"]))].reset_index(drop=True)
    rng = np.random.default_rng([seed, 23])
    parts = [g.iloc[np.sort(rng.permutation(len(g))[:per_generator])]
             for _, g in test.groupby(["dataset", "generator"], sort=True)]  # fmt: skip
    cols = ["image_id", "dataset", "generator", "label"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def explain_gallery(
    model_dir: str | Path, manifests: list[str], processed_dirs: list[str], out_path: str | Path,
    gradcam_dir: str | Path | None = None, per_generator: int = 2, seed: int = 0,
    max_new_tokens: int = 24, device: str = "auto",
) -> list[dict]:  # fmt: skip
    """Explanations of the gallery's test images by the fine-tuned explainer (one JSON)."""
    test = load_images(manifests, processed_dirs, ("test",))
    index = read_json(Path(gradcam_dir) / "index.json") if gradcam_dir else None
    picks = gallery_picks(index, test, per_generator, seed)
    explainer = Explainer.load(Path(model_dir) / "model").to(select_device(device))
    jpeg = test.set_index("image_id")["jpeg"]
    pictures = [Image.fromarray(decode_jpeg_array(jpeg[i])) for i in picks["image_id"]]
    reasons = answer_all(explainer, pictures, [EXPLAIN_QUESTION] * len(pictures), 8, max_new_tokens)
    p_fake = explainer.fake_probability(pictures) if pictures else np.zeros(0)
    records = [
        {**{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()},
         "explanation": reason, "explainer_p_fake": float(p),
         "jpeg_b64": base64.b64encode(jpeg[row["image_id"]]).decode()}
        for row, reason, p in zip(picks.to_dict("records"), reasons, p_fake, strict=True)
    ]  # fmt: skip
    write_json(out_path, {"question": EXPLAIN_QUESTION, "source": "gradcam" if index else "sample",
                          "gradcam_dir": str(gradcam_dir or ""), "images": records})  # fmt: skip
    return records
