"""Report sections about the models and the data: RINE block importances, the dataset card
(preprocess and label summaries, quarantined inputs), model cards and provenance.

Each section takes the :class:`~sidflow.report.context.ReportData` and returns an HTML
fragment, or ``""`` when it has nothing to show.
"""

from __future__ import annotations

import html
import json
import subprocess
from pathlib import Path

import pandas as pd
import yaml

import sidflow
from sidflow.io import read_json
from sidflow.report.context import ReportData
from sidflow.report.format import num, table

# model-card entries shown for every model
CARD_FACTS = (
    "threshold",
    "best_epoch",
    "val_ap",
    "train_images",
    "checkpoint_hash",
    "teachers",
    "kfold",
    "fold_thresholds",
    "fold_best_epochs",
    "fold_val_aps",
    "fold_train_images",
)
# quarantined inputs listed at most
MAX_QUARANTINED = 200


def code_version() -> str:
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return f"sidflow {sidflow.__version__} ({rev.stdout.strip() or 'no git'})"
    except (OSError, subprocess.SubprocessError):
        return f"sidflow {sidflow.__version__}"


def rine_section(r: ReportData) -> str:
    """Each RINE detector's learned block importances (which CLIP blocks it reads)."""
    from sidflow.report.plots import bars_svg

    out = [rine_ranking(r)]
    for name, path in sorted(r.model_cards.items()):
        card = read_json(path)
        if "block_importance" not in card or name.startswith("rine-grid-"):
            continue  # (grid cells: in the ranking only)
        imp = pd.Series(
            card["block_importance"],
            index=[f"block {i + 1}" for i in range(len(card["block_importance"]))],
        )
        bb = card.get("backbone") or {}
        out.append(f"<h3>{html.escape(name)}</h3>")
        out.append(
            f"<p>Backbone {html.escape(str(bb.get('checkpoint', '?')))} ({num(bb.get('n_blocks', '?'))} blocks of "
            f"{num(bb.get('dim', '?'))} features); best epoch {num(card['best_epoch'])}, validation AP "
            f"{num(card['val_ap'])}. Importance of a block = its softmax weight in the Trainable Importance "
            "Estimator, averaged over features (sums to 1; uniform would be "
            f"{num(1 / len(imp))}).</p>"
        )  # fmt: skip
        if bb.get("checkpoint") == "tiny":
            out.append('<p class="note">The tiny backbone is randomly initialised (no pretrained CLIP weights offline): '
                       "its importances describe random features, not CLIP's.</p>")  # fmt: skip
        out.append(bars_svg(imp, f"{name}: block importance", "importance"))
    return ("<h2>RINE: which encoder blocks matter</h2>" + "".join(out)) if any(out) else ""


def rine_ranking(r: ReportData) -> str:
    """Every RINE detector of the run (ablations, grid cells) ranked by validation AP, with its
    settings and pooled test metrics: the choice is made on validation data, test beside it."""
    pooled = r.pooled().set_index("detector") if len(r.metrics) else pd.DataFrame()
    rows = []
    for name, path in r.model_cards.items():
        card = read_json(path)
        if card.get("detector") != "rine":
            continue
        hp, m = (
            {**card.get("rine", {}), **card.get("train", {})},
            pooled.loc[name] if name in pooled.index else {},
        )
        rows.append({"detector": name, "importance": hp.get("importance", "learned"), "nproj": hp.get("nproj"),
                     "proj_dim": hp.get("proj_dim"), "contrastive weight": hp.get("contrastive_weight"),
                     "lr": hp.get("lr"), "epochs": hp.get("epochs"), "published weights": bool(hp.get("weights")),
                     "val AP": card.get("val_ap"), "test AP": m.get("ap"), "test accuracy": m.get("accuracy")})  # fmt: skip
    if len(rows) < 2:
        return ""
    table_ = pd.DataFrame(rows).sort_values(
        ["val AP", "detector"], ascending=[False, True], kind="stable"
    )
    table_.insert(0, "rank", range(1, len(table_) + 1))
    return ("<h3>RINE variants ranked by validation AP (ablations and grid cells)</h3>"
            + table(table_, left=("detector", "importance")))  # fmt: skip


def _encode_note(modes: set[str]) -> str:
    """Which preprocessing encode mode the images went through, and its risk."""
    if not modes:
        return ""
    if modes == {"jpeg"}:
        return ("<p>Preprocessing encode mode: <b>jpeg</b> (every real and fake image re-encoded as JPEG at the "
                "same quality, so file format and compression cannot separate them).</p>")  # fmt: skip
    return (f"<p class=\"warn\">Preprocessing encode mode: <b>{html.escape(', '.join(sorted(modes)))}</b>. "
            "Processed images keep format differences (lossless PNG, or the original bytes where nothing had to "
            "change): if real and fake files differ in format or compression, a detector can learn that instead "
            "of the image content. Check the shortcut audit and the encoding column below.</p>")  # fmt: skip


def _kfold_note(k: int) -> str:
    """What the test figures mean under k-fold splits (``""`` without them)."""
    if not k:
        return ""
    return (f"<p><b>{k}-fold cross-validation</b> (<code>splits.mode: kfold</code>): each trained detector is "
            f"{k} models. Model <i>f</i> is tested on fold <i>f</i>, validated on fold <i>f</i>+1 (early stopping "
            f"and its threshold) and trained on the other {k - 2} folds, so every image below is a test image "
            "exactly once. The test metrics pool the folds: AP and AUC rank all the images' scores together, "
            "and each image's accuracy is judged at its own fold model's validation threshold (the tables "
            "then show no single threshold).</p>")  # fmt: skip


def dataset_card_section(r: ReportData) -> str:
    """Per generator: inputs, written, quarantined, duplicates, split sizes; quarantined files."""
    rows, modes, k = [], set(), 0
    for key, folder in sorted(r.processed_dirs.items()):
        pre = read_json(Path(folder) / "summary.json")
        man = read_json(r.manifest_summaries[key])
        modes.add(pre.get("params", {}).get("encode", "jpeg"))
        enc = ", ".join(f"{k} {v}" for k, v in sorted(pre.get("encodings", {}).items()))
        rows.append({"generator": key, "inputs": pre["inputs"], "written": pre["written"],
                     "quarantined": pre["quarantined"], "exact duplicates": man["exact_duplicates"],
                     "cross-split duplicates": man["cross_split_duplicates"], **man["splits"],
                     "encoding": enc or "jpeg",
                     **{f"fold {i}": n for i, n in enumerate(man.get("folds", []))}})  # fmt: skip
        k = max(k, len(man.get("folds", [])))
    out = [
        "<h2>Dataset card</h2>",
        _kfold_note(k),
        _encode_note(modes),
        table(pd.DataFrame(rows), left=("generator", "encoding")),
    ]
    quarantined = [
        pd.read_parquet(Path(folder) / "quarantine.parquet").assign(generator=key)
        for key, folder in sorted(r.processed_dirs.items())
    ]
    q = pd.concat(quarantined, ignore_index=True) if quarantined else pd.DataFrame()
    if len(q):
        cols = ["generator", "source_path", "reason", "detail"]
        out.append(
            "<h3>Quarantined inputs</h3>" + table(q[cols].head(MAX_QUARANTINED), left=tuple(cols))
        )
    else:
        out.append("<p>No input was quarantined.</p>")
    return "".join(out)


def models_section(r: ReportData) -> str:
    """Each model card's key facts and its training history."""
    if not r.model_cards:
        return ""
    out = ["<h2>Models</h2>"]
    for name, path in sorted(r.model_cards.items()):
        card = read_json(path)
        hist = pd.json_normalize(card.get("history", []))
        facts = {k: card[k] for k in CARD_FACTS if k in card}
        out.append(f"<h3>{html.escape(name)}</h3>")
        out.append(f"<pre>{html.escape(json.dumps(facts, indent=1))}</pre>")
        if len(hist):
            out.append(table(hist))
    return "".join(out)


def finetune_cost_section(r: ReportData) -> str:
    """The teachers' fine-tuning cost side by side (LoRA vs full fine-tuning): trainable
    parameters, wall time, peak memory, and the pooled test metrics each one reached."""
    pooled = r.pooled().set_index("detector") if len(r.metrics) else pd.DataFrame()
    rows = []
    for name, path in sorted(r.model_cards.items()):
        cost = read_json(path).get("finetune_cost")
        if not cost:
            continue
        share = cost["trainable_params"] / max(cost["total_params"], 1)
        m = pooled.loc[name] if name in pooled.index else {}
        rows.append({"teacher": name, "mode": cost["mode"], "trainable params": cost["trainable_params"],
                     "trainable %": 100 * share, "total params": cost["total_params"],
                     "wall time (s)": cost["train_seconds"], "peak memory (MiB)": cost["peak_memory_mb"],
                     "device": cost.get("device", ""), "test AP": m.get("ap"), "test accuracy": m.get("accuracy")})  # fmt: skip
    if not rows:
        return ""
    return (
        "<h2>Teacher fine-tuning cost (LoRA vs full)</h2><p>Peak memory: the GPU allocator's peak, or on "
        "CPU the fine-tuning process's peak resident memory (data included). Wall time: the Trainer's "
        "training loop only.</p>" + table(pd.DataFrame(rows), left=("teacher", "mode", "device"))
    )


def provenance_section(r: ReportData) -> str:
    """The code version and the whole validated config the run used."""
    return (
        "<h2>Provenance</h2>"
        f"<p>Code: {html.escape(code_version())}</p>"
        f"<pre>{html.escape(yaml.safe_dump(r.config, sort_keys=False))}</pre>"
    )
