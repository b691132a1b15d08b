"""The explanation study's data (the ``aigen-vqa`` archive), unpacked for the explainer steps.

The archive holds the hand-written fine-tuning conversations, the VQA benchmark's true/false
and multiple-choice question sets with their images, and the published model's recorded
answers (see ``../shared/README.md``). The ``vqa_data`` rule checks its sha256 and extracts it
safely (no absolute paths, no ``..``, no links: :func:`sidflow.data.archive.extract`)::

    extract_vqa_archive("aigen-vqa.zip", sha256, "data/vqa/aigen-vqa")
    # -> data/vqa/aigen-vqa/{finetune,true-false,multiple-choice,recorded-answers}/...
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sidflow.data.archive import extract
from sidflow.io import atomic_dir, sha256_file, write_json

log = logging.getLogger(__name__)

PREFIX = "aigen-vqa"
CONVERSATIONS = "finetune/conversations.json"
QUESTION_SETS = {"true-false": "true-false/questions.json",
                 "multiple-choice": "multiple-choice/questions.json"}  # fmt: skip


class VqaArchiveError(ValueError):
    """The archive is missing, altered (sha256) or lacks a part the steps need."""


def extract_vqa_archive(archive: str | Path, sha256: str | None, out_dir: str | Path) -> dict:
    """Check ``archive`` against ``sha256`` (if given) and unpack its ``aigen-vqa/`` folder
    into ``out_dir`` (atomically). Returns the counts written to ``out_dir/summary.json``."""
    archive = Path(archive)
    if not archive.is_file():
        raise VqaArchiveError(f"{archive}: the VQA archive does not exist (explainer.vqa.archive)")
    if sha256:
        got = sha256_file(archive)
        if got != sha256:
            raise VqaArchiveError(f"{archive}: sha256 {got} is not the configured {sha256}")
    with atomic_dir(out_dir) as tmp:
        files = extract(archive, tmp, prefix=PREFIX)
        summary = {"archive": archive.name, "files": files, **vqa_counts(tmp)}
        write_json(tmp / "summary.json", summary)
    log.info("%s: %d files -> %s (%s)", archive, files, out_dir, summary)
    return summary


def vqa_counts(root: str | Path) -> dict:
    """Records per part of an unpacked archive; a missing part is a clear error."""
    root = Path(root)
    counts = {}
    for name, rel in {"conversations": CONVERSATIONS, **QUESTION_SETS}.items():
        path = root / rel
        if not path.is_file():
            raise VqaArchiveError(f"{root}: {rel} is missing from the VQA archive")
        counts[name] = len(json.loads(path.read_text()))
    counts["recorded_answers"] = sorted(p.name for p in (root / "recorded-answers").glob("*.json"))
    return counts
