"""The report's "Explanations" section: the explainer's card, its VQA benchmark before vs
after fine-tuning (beside the published model's recorded answers), and a gallery of test
images with the student's verdict and Grad-CAM next to the explainer's reason."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from sidflow.io import read_json
from sidflow.report.format import num, table

MODEL_ORDER = ["base", "finetuned", "published-base", "published-epoch6"]
KIND_TITLES = {"true-false": "True/false questions (Real or Fake)",
               "multiple-choice": "Multiple-choice explanations (A-D)"}  # fmt: skip


def vqa_tables(errors: pd.DataFrame) -> str:
    """One table per question set: error (errors/n) per scope and key, one column per model."""
    out = []
    for kind, g in errors.groupby("kind", sort=False):
        models = [m for m in MODEL_ORDER if m in set(g["model"])] + sorted(
            set(g["model"]) - set(MODEL_ORDER)
        )
        g = g.assign(cell=[f"{num(100 * e, 1)}% ({int(k)}/{int(n)})"
                           for e, k, n in zip(g["error"], g["errors"], g["n"], strict=True)])  # fmt: skip
        wide = g.pivot_table(
            index=["scope", "key"], columns="model", values="cell", aggfunc="first", sort=False
        )
        wide = wide.reindex(columns=models).reset_index()
        other = g[g["scope"] == "overall"].set_index("model")["other"].reindex(models)
        out.append(f"<h3>{html.escape(KIND_TITLES.get(kind, kind))}</h3>")
        out.append(table(wide.fillna(""), left=("scope", "key", *models)))
        out.append("<p>Answers that are not an option (counted wrong): "
                   + ", ".join(f"{html.escape(m)} {int(v)}" for m, v in other.items() if pd.notna(v)) + ".</p>")  # fmt: skip
    return "".join(out)


def gallery_html(gallery: dict, gradcam_dir: str | None) -> str:
    figs = []
    for r in gallery["images"]:
        pic = Path(gradcam_dir) / r["file"] if gradcam_dir and r.get("file") else None
        if pic is not None and pic.is_file():
            src = "data:image/png;base64," + base64.b64encode(pic.read_bytes()).decode()
        else:
            src = "data:image/jpeg;base64," + r["jpeg_b64"]
        truth = "fake" if r["label"] else "real"
        student = ""
        if "pred" in r and r["pred"] is not None:
            student = (f"student: {'fake' if r['pred'] else 'real'} (p={num(r['student_p_fake'], 2)}, "
                       f"{'correct' if r['student_correct'] else 'wrong'}); ")  # fmt: skip
        cap = (f"{r['dataset']}/{r['generator']}, truth {truth}; {student}"
               f"explainer p_fake={num(r['explainer_p_fake'], 2)}: “{r['explanation']}”")  # fmt: skip
        figs.append(f'<figure class="explained"><img alt="{html.escape(r["image_id"])}" src="{src}">'
                    f"<figcaption>{html.escape(cap)}</figcaption></figure>")  # fmt: skip
    if not figs:
        return "<p>No test images to explain.</p>"
    return f"<div class='figs'>{''.join(figs)}</div>"


def explanations_section(card_path: str | None, gallery_path: str | None,
                         vqa_errors_path: str | None, vqa_archive: str | None) -> str:  # fmt: skip
    """The section's HTML ("" when the run has no explainer)."""
    if not card_path:
        return ""
    card = read_json(card_path)
    conv = card["conversations"]["by_source"]
    last = card["history"][-1]["loss"] if card["history"] else None
    out = ["<h2>Explanations: the vision-language explainer</h2>",
           f"<p>{html.escape(str(card['checkpoint']))} explainer, fine-tuned ({html.escape(card.get('mode', 'LoRA'))}) "
           f"{len(card['history'])} epochs "
           f"({card['steps']} steps, last loss {num(last, 3)}) on "
           + ", ".join(f"{n} {html.escape(s)}" for s, n in conv.items())
           + " conversations (training split only; template answers are weak supervision); "
           f"{card['trainable_params']:,} of {card['total_params']:,} parameters trained. "
           "It is also scored as a detector (<code>explainer</code> in the tables above): "
           "p_fake = p(“Fake”) vs p(“Real”) as its answer to the true/false question.</p>"]  # fmt: skip
    if vqa_errors_path:
        out.append("<p>VQA benchmark error, before (<code>base</code>) and after (<code>finetuned</code>) "
                   "fine-tuning, with the published TinyLLaVA's recorded answers scored the same way; "
                   "rows: overall, per generator, per answer type.</p>")  # fmt: skip
        out.append(vqa_tables(pd.read_parquet(vqa_errors_path)))
    else:
        out.append(f"<p>VQA benchmark skipped: its archive ({html.escape(str(vqa_archive))}) is not on "
                   "this machine (explainer.vqa.archive).</p>")  # fmt: skip
    if gallery_path:
        gallery = read_json(gallery_path)
        out.append(f"<h3>Why: {html.escape(gallery['question'])}</h3>")
        out.append(gallery_html(gallery, gallery.get("gradcam_dir") or None))
    return "".join(out)
