"""Explain images: the explainer's verdict, p_fake and reason, beside any trained detector's
verdict and (for a student) its Grad-CAM overlay.

    sidflow explain --model results/demo/models/explainer photo.jpg more/ \\
        --detector results/demo/models/student-kd --output why.jsonl --html why.html

Every input is read with the training preprocessing's safe reader: a file that is not an
image (or too large, or unreadable) gets a ``quarantined`` row with its reason, never a gap.
The explainer's verdict is its own answer to the true/false question (p("Fake") > p("Real"));
a detector's verdict uses the threshold it calibrated on validation data. The same
:class:`ExplainSession` serves the local web page (:mod:`sidflow.serve`).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Iterator
from pathlib import Path

from sidflow.data.images import BadImageError, normalize_image, open_image, read_image_file
from sidflow.io import text_path

EXPLAINER_THRESHOLD = 0.5  # p("Fake") > p("Real"): the answer the explainer would give
THUMB = 192  # pixels of the page's input picture


class ExplainSession:
    """A loaded explainer (``results/<exp>/models/explainer``) and optional detectors."""

    def __init__(self, explainer_dir: str | Path, detector_dirs: Iterable[str | Path] = (),
                 device: str = "cpu", backbone: str | Path | None = None,
                 max_new_tokens: int = 48, gradcam_layer: str = "layer3"):  # fmt: skip
        from sidflow.models.explainer import Explainer
        from sidflow.predict import load_predictor

        folder = Path(explainer_dir)
        model = folder / "model" if (folder / "model").is_dir() else folder
        self.name = str(explainer_dir)
        self.explainer = Explainer.load(model).to(device)
        self.max_new_tokens, self.layer = max_new_tokens, gradcam_layer
        self.detectors = [load_predictor(d, device, backbone) for d in detector_dirs]

    def explain_bytes(self, raw: bytes, name: str) -> dict:
        """One image's result; ``raw``: the file's bytes, decoded by the preprocessing's own
        checked decoder (:func:`sidflow.data.images.open_image`: a bad image raises
        :class:`~sidflow.data.images.BadImageError`, alpha is composited as in training)."""
        from sidflow.train.explainer import EXPLAIN_QUESTION

        picture = open_image(raw)[0]
        p_fake = float(self.explainer.fake_probability([picture])[0])
        reason = self.explainer.answer([picture], [EXPLAIN_QUESTION], self.max_new_tokens)[0]
        thumb = picture.copy()
        thumb.thumbnail((THUMB, THUMB))
        buf = io.BytesIO()
        thumb.save(buf, "PNG")
        return {"path": name, "verdict": "fake" if p_fake > EXPLAINER_THRESHOLD else "real",
                "p_fake": round(p_fake, 6), "explanation": reason, "model": self.name, "reason": "",
                "image_png": base64.b64encode(buf.getvalue()).decode(),
                "detectors": [self._detect(raw, pred) for pred in self.detectors]}  # fmt: skip

    def _detect(self, raw: bytes, pred) -> dict:
        norm = normalize_image(raw, pred.size, pred.quality, pred.max_pixels, pred.encode)
        p = float(pred.score([norm.jpeg])[0])
        out = {"model": pred.name, "p_fake": round(p, 6), "threshold": pred.threshold,
               "verdict": "fake" if p >= pred.threshold else "real", "gradcam_png": None}  # fmt: skip
        if pred.student is not None:  # the student the predictor scores with, for Grad-CAM
            from sidflow.evaluate.gradcam import cam_pictures

            model, meta = pred.student
            png = cam_pictures(model, meta, [norm.jpeg], [int(p >= pred.threshold)], self.layer)[0]
            out["gradcam_png"] = base64.b64encode(png).decode()
        return out

    def explain_path(self, path: str | Path, max_bytes: int | None = None) -> dict:
        """:meth:`explain_bytes` of a file, or a ``quarantined`` row naming why it was not read."""
        from sidflow.data.images import DEFAULT_MAX_BYTES

        try:
            return self.explain_bytes(
                read_image_file(path, max_bytes or DEFAULT_MAX_BYTES), text_path(path)
            )
        except (BadImageError, OSError) as exc:
            reason = str(exc) if isinstance(exc, BadImageError) else f"unreadable: {exc}"
            return quarantined(text_path(path), reason, self.name)


def quarantined(name: str, reason: str, model: str) -> dict:
    return {"path": name, "verdict": "quarantined", "p_fake": None, "explanation": "",
            "model": model, "reason": reason, "image_png": None, "detectors": []}  # fmt: skip


def explain_paths(session: ExplainSession, items: Iterable[str]) -> Iterator[dict]:
    """One result per input entry (files, folders walked, globs; see sidflow.predict)."""
    from sidflow.predict import expand_paths

    for path in expand_paths(items):
        yield session.explain_path(path)


def json_row(result: dict) -> dict:
    """A result without its pictures (the JSON-lines record)."""
    out = {k: v for k, v in result.items() if k not in ("image_png", "detectors")}
    out["detectors"] = [
        {k: v for k, v in d.items() if k != "gradcam_png"} for d in result["detectors"]
    ]
    return out


# -- the page ------------------------------------------------------------------------------------
CSS = """body{font:14px system-ui,sans-serif;margin:1.5em;max-width:60em}
.result{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1em 0}
.fake{color:#b00020;font-weight:bold}.real{color:#006400;font-weight:bold}
.quarantined{color:#8a6d00;font-weight:bold}img{image-rendering:pixelated;max-width:100%}
table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #eee;text-align:left}"""


def result_html(r: dict, index: int = 0) -> str:
    """One result as an HTML block; ids ``verdict-<i>``, ``p-fake-<i>``, ``explanation-<i>``."""
    e = html.escape
    head = f"<h3>{e(r['path'])}</h3>"
    if r["verdict"] == "quarantined":
        return (f'<div class="result">{head}<p>verdict: <span id="verdict-{index}" class="quarantined">'
                f'quarantined</span> ({e(r["reason"])})</p></div>')  # fmt: skip
    rows = [f'<tr><td>explainer</td><td id="verdict-{index}" class="{r["verdict"]}">{r["verdict"]}</td>'
            f'<td id="p-fake-{index}">{r["p_fake"]:.4f}</td><td>0.5 (its own answer)</td></tr>']  # fmt: skip
    pics = [f'<figure><img alt="input" src="data:image/png;base64,{r["image_png"]}"><figcaption>input</figcaption></figure>']  # fmt: skip
    for k, d in enumerate(r["detectors"]):
        rows.append(f'<tr><td>{e(d["model"])}</td><td id="verdict-{index}-{k}" class="{d["verdict"]}">{d["verdict"]}</td>'
                    f'<td>{d["p_fake"]:.4f}</td><td>{d["threshold"]:.4f} (validation)</td></tr>')  # fmt: skip
        if d.get("gradcam_png"):
            pics.append(f'<figure><img alt="Grad-CAM" src="data:image/png;base64,{d["gradcam_png"]}">'
                        f"<figcaption>Grad-CAM of {e(Path(d['model']).name)}</figcaption></figure>")  # fmt: skip
    return (f'<div class="result">{head}<div>{"".join(pics)}</div>'
            "<table><tr><th>model</th><th>verdict</th><th>p_fake</th><th>threshold</th></tr>"
            f'{"".join(rows)}</table><p>Why: <q id="explanation-{index}">{e(r["explanation"])}</q></p></div>')  # fmt: skip


def page_html(results: list[dict], title: str = "sidflow explain", body_top: str = "") -> str:
    """A self-contained page (inline CSS, pictures as data URIs, nothing fetched)."""
    blocks = "".join(result_html(r, i) for i, r in enumerate(results))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body_top}{blocks}</body></html>")  # fmt: skip
