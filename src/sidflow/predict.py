"""Apply a trained detector to image files with exactly the training preprocessing.

    sidflow predict --model results/demo/models/student-kd --output preds.csv photos/ extra.png
    sidflow predict --model results/demo/models/rine --output preds.csv photos/   # RINE + its CLIP

Order of work: the output path and every input argument are checked, then the model is
loaded (its integrity hashes checked), and only then are images read. Streams through
folders in batches; an unreadable file is reported (verdict ``quarantined`` with its
reason) instead of stopping the run. A non-finite score stops the run naming the model.

Results go to a temporary file beside ``--output`` that replaces it only when the run
completes; a run stopped half-way keeps its rows in ``<output>.partial``.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sidflow.data.images import DEFAULT_MAX_BYTES, BadImageError, normalize_image, read_image_file
from sidflow.data.loading import to_tensor
from sidflow.io import text_path

log = logging.getLogger(__name__)

FIELDS = [
    "path",
    "p_fake",
    "verdict",
    "threshold",
    "model",
    "reason",
    "attribution",
    "attribution_p",
]
FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json"}


class NonFiniteScoreError(ValueError):
    """The model produced NaN/inf: its weights are broken."""


def check_inputs(items: Iterable[str]) -> list[str]:
    """The arguments, after checking that each is a file, a folder or a matching glob
    (every bad one named in one :class:`FileNotFoundError`)."""
    items = [str(i) for i in items]
    bad = [i for i in items if not Path(i).exists() and not glob.glob(i, recursive=True)]
    if bad:
        raise FileNotFoundError(
            f"no such file, folder or glob match: {', '.join(bad)} (nothing was classified)"
        )
    return items


def walk_inputs(folder: Path) -> Iterator[Path]:
    """Every entry below ``folder`` that is not a folder, in sorted order: image or not, with or
    without a suffix, links (never followed: a dangling one or a loop is reported when read)
    and special files; a sub-folder that cannot be listed is yielded too, so that reading it
    reports why. Nothing found is left out of the results."""
    unreadable: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable.append):
        links = [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
        dirnames[:] = sorted(d for d in dirnames if d not in links)
        yield from (Path(dirpath) / name for name in sorted(filenames + links))
    yield from (Path(err.filename) for err in unreadable if err.filename)


def expand_paths(items: Iterable[str]) -> Iterator[Path]:
    """Files, folders (recursively: every entry, :func:`walk_inputs`) and glob patterns, in
    order; every argument is checked before the first path is yielded (:func:`check_inputs`)."""
    for item in check_inputs(items):
        p = Path(item)
        if p.is_dir() and not p.is_symlink():
            yield from walk_inputs(p)
        elif p.exists() or p.is_symlink():
            yield p
        else:
            for m in map(Path, sorted(glob.glob(item, recursive=True))):
                yield from walk_inputs(m) if m.is_dir() and not m.is_symlink() else [m]


@dataclass
class Predictor:
    """A loaded detector (a student, or RINE over its CLIP backbone) with the preprocessing
    and threshold it was trained with; ``score`` maps processed image bytes to p_fake, and
    ``attribute`` (detectors with an attribution head) to the most likely source (``real`` or
    ``dataset/generator``) and its probability."""

    name: str
    score: Callable[[list[bytes]], np.ndarray]
    size: int
    quality: int
    max_pixels: int
    threshold: float
    encode: str = "jpeg"  # the preprocessing encode mode the model was trained with
    max_bytes: int = DEFAULT_MAX_BYTES  # larger inputs are quarantined unread
    attribute: Callable[[list[bytes]], tuple[list[str], np.ndarray]] | None = None
    student: tuple | None = (
        None  # (model, meta) of a student detector (Grad-CAM in sidflow.explain)
    )


def load_predictor(
    model_dir: str | Path, device: str = "cpu", backbone: str | Path | None = None
) -> Predictor:
    """A student folder (``student.json``) or a RINE folder (``card.json`` of a RINE detector,
    whose CLIP backbone is read from ``backbone`` or the folder its card names)."""
    folder = Path(model_dir)
    if not (folder / "student.json").is_file() and (folder / "card.json").is_file():
        return _rine_predictor(folder, device, backbone)
    from sidflow.models.student import load_student

    model, meta = load_student(model_dir)
    model.to(device)
    pre = meta.get("preprocess") or {}
    mean, std = meta["student"]["image_mean"], meta["student"]["image_std"]

    last: dict = {}  # the forward of the batch being scored, reused by attribute()

    def forward(jpegs: list[bytes]) -> dict:
        if last.get("jpegs") is not jpegs:
            with torch.no_grad():
                last.update(jpegs=jpegs, out=model(to_tensor(jpegs, mean, std).to(device)))
        return last["out"]

    def score(jpegs: list[bytes]) -> np.ndarray:
        return torch.softmax(forward(jpegs)["logits"].float(), 1)[:, 1].cpu().numpy()

    sources = meta["student"].get("generators") or []

    def attribute(jpegs: list[bytes]) -> tuple[list[str], np.ndarray]:
        prob = torch.softmax(forward(jpegs)["generator_logits"].float(), 1).cpu().numpy()
        return [sources[i] for i in prob.argmax(1)], prob.max(1)

    return Predictor(name=str(model_dir), score=score, threshold=float(meta["threshold"]),
                     attribute=attribute if sources else None, student=(model, meta),
                     size=int(pre.get("image_size", meta["student"]["image_size"])),
                     quality=int(pre.get("jpeg_quality", 90)), max_pixels=int(pre.get("max_pixels", 64_000_000)),
                     encode=str(pre.get("encode", "jpeg")))  # fmt: skip


def _rine_predictor(folder: Path, device: str, backbone: str | Path | None) -> Predictor:
    """RINE on raw images: the training preprocessing, the backbone's block tokens under the
    run's test-time crop, the head's p_fake (the backbone's content hash is checked)."""
    from sidflow.cache.clip_features import clip_tokens, test_crops
    from sidflow.data.images import decode_jpeg_array
    from sidflow.io import hash_tree, read_json
    from sidflow.models.clip import load_clip
    from sidflow.train.rine import load_rine, predict_rine

    card = read_json(folder / "card.json")
    if card.get("detector") != "rine":
        raise ValueError(f"{folder}: neither a student (student.json) nor a RINE model folder")
    want = (card.get("backbone") or {}).get("checkpoint_hash")
    bdir = Path(backbone or card.get("backbone_dir") or "")
    if not want or not (bdir / "model").is_dir():
        raise FileNotFoundError(f"{folder}: its CLIP backbone folder {str(bdir) or '?'} is missing; "
                                "give it with --backbone (e.g. results/backbones/clip)")  # fmt: skip
    if hash_tree(bdir / "model") != want:
        raise ValueError(
            f"{bdir}: not the CLIP backbone {folder} was trained on (content hash differs)"
        )
    head, _ = load_rine(folder)
    clip, cfg = load_clip(bdir)
    clip.to(device)
    head.to(device)
    crop, pre = card.get("test_crop", "resize"), card.get("preprocess") or {}

    def score(jpegs: list[bytes]) -> np.ndarray:
        crops = [test_crops(decode_jpeg_array(j), crop, cfg.image_size) for j in jpegs]
        toks = clip_tokens(clip, cfg.image_size, device, np.concatenate(crops), batch_size=64)
        toks = toks.reshape(
            len(jpegs), len(crops[0]), *toks.shape[1:]
        )  # images x crops x blocks x dim
        return predict_rine(head, toks[:, 0] if len(crops[0]) == 1 else toks, device)

    return Predictor(name=str(folder), score=score, threshold=float(card["threshold"]),
                     size=int(pre.get("image_size", 32)), quality=int(pre.get("jpeg_quality", 90)),
                     max_pixels=int(pre.get("max_pixels", 64_000_000)), encode=str(pre.get("encode", "jpeg")))  # fmt: skip


def predict_paths(model: str | Path | Predictor, items: Iterable[str], batch_size: int = 64,
                  device: str = "cpu", progress: bool = False) -> Iterator[dict]:  # fmt: skip
    """Yield one result dict per input: path, p_fake, verdict, threshold, model, reason.
    ``model`` is a model folder or a :class:`Predictor` from :func:`load_predictor`."""
    pred = model if isinstance(model, Predictor) else load_predictor(model, device)
    threshold, name = pred.threshold, pred.name
    paths: Iterable[Path] = expand_paths(items)
    if progress:
        from tqdm import tqdm

        paths = tqdm(paths, unit="img")
    batch: list[tuple[Path, bytes]] = []

    def flush():
        jpegs = [j for _, j in batch]  # one list: attribute() reuses score()'s forward pass
        p = np.asarray(pred.score(jpegs), dtype=float)
        bad = ~np.isfinite(p)
        if bad.any():
            first = batch[int(np.argmax(bad))][0]
            raise NonFiniteScoreError(
                f"model {name}: non-finite p_fake ({p[bad][0]}) for {first} and {int(bad.sum()) - 1} "
                "more in its batch: the model's weights are broken (NaN/inf); retrain or restore them"
            )
        src, src_p = (
            pred.attribute([j for _, j in batch])
            if pred.attribute
            else ([None] * len(batch), [None] * len(batch))
        )
        for (path, _), pf, a, ap in zip(batch, p, src, src_p, strict=True):
            yield {"path": text_path(path), "p_fake": round(float(pf), 6), "verdict": "fake" if pf >= threshold else "real",
                   "threshold": threshold, "model": name, "reason": "", "attribution": a,
                   "attribution_p": None if ap is None else round(float(ap), 6)}  # fmt: skip
        batch.clear()

    for path in paths:
        try:
            norm = normalize_image(
                read_image_file(path, pred.max_bytes),
                pred.size,
                pred.quality,
                pred.max_pixels,
                pred.encode,
            )
        except (BadImageError, OSError) as exc:  # a row with the reason, never a silent gap
            reason = str(exc) if isinstance(exc, BadImageError) else f"unreadable: {exc}"
            yield {"path": text_path(path), "p_fake": None, "verdict": "quarantined", "threshold": threshold,
                   "model": name, "reason": reason, "attribution": None, "attribution_p": None}  # fmt: skip
            continue
        batch.append((path, norm.jpeg))
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()


# -- the output file ----------------------------------------------------------------------------
def output_format(output: str | Path, fmt: str | None = None) -> str:
    """``csv``, ``tsv`` or ``json``: ``fmt`` if given, else from the suffix (any case).
    Refuses a folder, a missing parent folder or an unknown suffix, before any work."""
    out = Path(output)
    if out.is_dir():
        raise ValueError(f"--output {output}: is a folder; give a file such as {out / 'preds.csv'}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--output {output}: folder {out.parent} does not exist")
    if fmt:
        return fmt
    if out.suffix.lower() not in FORMATS:
        raise ValueError(
            f"--output {output}: cannot tell the format from the suffix {out.suffix!r} "
            f"(use {', '.join(FORMATS)} or --format {{{','.join(FORMATS.values())}}})"
        )
    return FORMATS[out.suffix.lower()]


class ResultsFile:
    """Rows written to a temporary file beside ``output``: :meth:`commit` moves it onto
    ``output``; :meth:`keep_partial` moves it to ``<output>.partial`` (none: removed)."""

    def __init__(self, output: str | Path, fmt: str):
        self.output, self.fmt, self.rows = Path(output), fmt, 0
        fd, tmp = tempfile.mkstemp(prefix=f".{self.output.name}.", suffix=".tmp",
                                   dir=self.output.parent)  # fmt: skip
        self.tmp = Path(tmp)
        self.fh = os.fdopen(fd, "w", newline="")
        self.buffer: list[dict] = []
        self.writer = None
        if fmt in ("csv", "tsv"):
            self.writer = csv.DictWriter(self.fh, FIELDS, delimiter="," if fmt == "csv" else "\t")
            self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.rows += 1
        if self.writer:
            self.writer.writerow(row)
            self.fh.flush()
        else:
            self.buffer.append(row)

    def _close(self, dest: Path) -> Path:
        if self.fmt == "json":
            self.fh.write(json.dumps(self.buffer, indent=1))
        self.fh.close()
        from sidflow.io import current_umask

        os.chmod(self.tmp, 0o666 & ~current_umask())  # mkstemp made it 0600
        os.replace(self.tmp, dest)
        return dest

    def commit(self) -> Path:
        return self._close(self.output)

    def keep_partial(self) -> Path | None:
        if self.rows:
            return self._close(self.output.with_name(self.output.name + ".partial"))
        self.fh.close()
        self.tmp.unlink(missing_ok=True)
        return None
