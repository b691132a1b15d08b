"""Report sections fed by the audit and explanation steps (shortcut audit, Grad-CAM).

Each function returns an HTML fragment built only from the step's output files and the
metrics table, so every number on the page can be traced back to a file.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from sidflow.io import read_json
from sidflow.registry import DetectorKind
from sidflow.report.format import num

# Audit AP at or above this on a fake generator means its raw files are separable by
# metadata alone (0.5 is chance for a balanced set).
AUDIT_WARN_AP = 0.9


def audit_section(
    summary_path: str | Path | None, metrics: pd.DataFrame, kinds: Mapping[str, DetectorKind]
) -> str:
    """Raw-file formats per generator and the metadata-only classifier's AP next to the
    detectors' (``kinds``: detector -> kind; the audit is the detector of kind ``audit``, the
    others compared with it are the ranked ones)."""
    if not summary_path:
        return ""
    summary = read_json(summary_path)
    clean = metrics[(metrics["perturbation"] == "none")]
    audits = [d for d, k in kinds.items() if k.name == "audit"]
    controls = [d for d, k in kinds.items() if not k.ranked]
    audit = clean[clean["detector"].isin(audits)].set_index(["dataset", "generator"])
    detectors = clean[~clean["detector"].isin(controls)]
    rows, flagged = [], []
    for key, facts in sorted(summary["generators"].items()):
        dataset, _, generator = key.partition("/")
        ap = audit["ap"].get((dataset, generator))
        is_real = bool(audit["is_real"].get((dataset, generator), False))
        best = detectors[(detectors["dataset"] == dataset) & (detectors["generator"] == generator)]
        best_ap = best["ap"].max() if len(best) else None
        if ap is not None and not is_real and ap >= AUDIT_WARN_AP:
            flagged.append(key)
        rows.append(
            f"<tr><td class='l'>{html.escape(key)}</td><td>{num(facts['n'])}</td><td class='l'>{html.escape(facts['formats'])}</td>"
            f"<td>{html.escape(facts['median_size'])}</td><td>{num(facts['median_kb'], 2)}</td>"
            f"<td>{num(facts['median_jpeg_quality'], 0)}</td><td>{'(real)' if is_real else num(ap)}</td>"
            f"<td>{'(real)' if is_real else num(best_ap)}</td></tr>"
        )
    pooled = audit["ap"].get(("all", "all"))
    if flagged:
        verdict = (f'<p class="note"><b>Warning:</b> the raw files of {html.escape(", ".join(flagged))} are separable '
                   f"from real ones by metadata alone (audit AP ≥ {num(AUDIT_WARN_AP, 2)}). sidflow's detectors only see "
                   "re-encoded pixels, but results on these raw files elsewhere may reflect format, not content.</p>")  # fmt: skip
    else:
        verdict = (f'<p class="verdict">No generator is separable by metadata alone (audit AP below {num(AUDIT_WARN_AP, 2)}; '
                   f"pooled {num(pooled)}).</p>")  # fmt: skip
    imp = summary.get("importance_val_ap_drop") or {}
    imp_html = ", ".join(f"{html.escape(k)} {num(v, sign=True)}" for k, v in list(imp.items())[:6])
    head = ("<tr><th class='l'>generator</th><th>files</th><th class='l'>formats</th><th>median size</th>"
            "<th>median KB</th><th>median JPEG quality</th><th>audit AP</th><th>best detector AP</th></tr>")  # fmt: skip
    return (
        "<h2>Shortcut audit (raw-file metadata only)</h2>"
        f"<p>A gradient-boosting classifier trained on {num(summary['train_images'])} training images' raw metadata "
        f"({html.escape(', '.join(summary['features']))}), never their pixels. Its AP per generator, "
        "on the same test images as the detectors:</p>"
        + verdict + f"<table>{head}{''.join(rows)}</table>"
        + (f"<p>Most informative features (drop in validation AP when shuffled): {imp_html}.</p>" if imp_html else "")
    )  # fmt: skip


def gradcam_section(gallery_dirs: Mapping[str, str] | list[str] | None) -> str:
    """Embedded Grad-CAM pictures (input | overlay) per student, generator and outcome.

    ``gallery_dirs``: student -> gallery folder (a plain list names each by its folder)."""
    if not gallery_dirs:
        return ""
    if not isinstance(gallery_dirs, Mapping):
        gallery_dirs = {Path(d).name: d for d in gallery_dirs}
    out = ["<h2>Grad-CAM: where the students look</h2>",
           "<p>Seeded sample of test images per generator, correct and wrong at the validation threshold; "
           "left the processed input, right the evidence for the predicted class.</p>"]  # fmt: skip
    for student, d in gallery_dirs.items():
        index = read_json(Path(d) / "index.json")
        out.append(f"<h3>{html.escape(student)} (layer {html.escape(index['layer'])})</h3>")
        if not index["images"]:
            why = index.get("unsupported")
            out.append(f"<p>{html.escape(why) if why else 'No test predictions to explain.'}</p>")
            continue
        df = pd.DataFrame(index["images"])
        for (key, correct), g in df.groupby(
            [df["dataset"] + "/" + df["generator"], "correct"], sort=True
        ):
            figs = []
            for r in g.to_dict("records"):
                data = base64.b64encode((Path(d) / r["file"]).read_bytes()).decode()
                cap = f"{'fake' if r['label'] else 'real'} → {'fake' if r['pred'] else 'real'}, p={num(r['p_fake'], 2)}"
                figs.append(f'<figure><img alt="{html.escape(r["file"])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(cap)}</figcaption></figure>")  # fmt: skip
            label = "correct" if correct else "wrong"
            out.append(
                f"<h4>{html.escape(key)}: {label}</h4><div class='figs'>{''.join(figs)}</div>"
            )
    return "".join(out)
