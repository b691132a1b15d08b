"""Generator folders from labelled metadata: a ``local`` source whose images are listed in
JSON or CSV files that say which generator made each one.

Many released sets are not laid out as one folder per generator but as a list of records
(GenImage-style VQA sets, Kaggle CSVs). With ``metadata`` on a local source, each generator
of the sheet takes the images whose ``group`` value equals its ``source_subdir``::

    datasets:
      aigen-vqa:
        source:
          type: local
          path: ../shared/datasets/aigen-vqa/aigen-vqa.zip     # a folder or a zip/tar archive
          metadata:
            files: [aigen-vqa/finetune/conversations.json, aigen-vqa/true-false/questions.json]
            image: image                 # the record's image path, relative to its file's folder
            group: metadata.generator    # dotted key of the generator name
            canonical: true              # "big gan" == "big_gan" == biggan, "stable diffusion 1.4" == sd1.4

A JSON file is a list of objects; a ``.csv``/``.tsv`` file has one row per image (dotted keys
are column names then). An image listed twice (several files may share it) is copied once; a
listed image that is missing, or a path that leaves the archive, is a clear error naming the
metadata file and the record. Archives are unpacked safely into a temporary folder first.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from sidflow.data.archive import extract, is_archive


def canonical_generator(name: str) -> str:
    """One spelling per generator: lower case, ``stable diffusion 1.4`` -> ``sd1.4``,
    ``big gan`` / ``big_gan`` -> ``biggan``; ``natural`` stays (the real images)."""
    text = re.sub(r"[\s_-]+", " ", str(name).strip().lower())
    sd = re.fullmatch(r"stable diffusion (\d)[ .](\d)", text)
    if sd:
        return f"sd{sd.group(1)}.{sd.group(2)}"
    return text.replace(" ", "")


def _records(path: Path) -> list[dict]:
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="") as fh:
            return list(
                csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            )
    rows = json.loads(path.read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of records")
    return rows


def _get(record: dict, key: str):
    if key in record:
        return record[key]
    value = record
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def select_images(root: Path, spec: dict, value: str) -> list[Path]:
    """The images under ``root`` whose metadata group equals ``value`` (in file order)."""
    canon = canonical_generator if spec.get("canonical", True) else str
    want, chosen, seen = canon(value), [], set()
    for rel in spec["files"]:
        meta = root / rel
        if not meta.is_file():
            raise FileNotFoundError(f"metadata file {rel} is not in {root}")
        for n, record in enumerate(_records(meta)):
            group, image = (
                _get(record, spec.get("group", "generator")),
                _get(record, spec.get("image", "image")),
            )
            if group is None or image is None:
                raise ValueError(
                    f"{meta}: record {n} has no {spec.get('group')!r} or {spec.get('image')!r}"
                )
            if canon(group) != want:
                continue
            rel_img = PurePosixPath(str(image).replace("\\", "/"))
            if rel_img.is_absolute() or ".." in rel_img.parts:
                raise ValueError(f"{meta}: record {n}: image path {image!r} leaves the dataset")
            path = meta.parent / rel_img
            if not path.is_file():
                raise FileNotFoundError(f"{meta}: record {n}: image {path} does not exist")
            if path not in seen:
                seen.add(path)
                chosen.append(path)
    return chosen


def fetch_by_metadata(path: Path, spec: dict, value: str, dest: Path) -> int:
    """Copy the images of generator ``value`` (see :func:`select_images`) into ``dest``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"local source {path} does not exist")
    with tempfile.TemporaryDirectory(prefix="sidflow-meta-") as tmp:
        root = path
        if path.is_file():
            if not is_archive(path):
                raise ValueError(f"local source {path} is neither a folder nor a zip/tar archive")
            root = Path(tmp)
            extract(path, root)
        images = select_images(root, spec, value)
        if not images:
            raise FileNotFoundError(
                f"local source {path}: no image has {spec.get('group')} = {value!r}"
            )
        for i, src in enumerate(images):
            shutil.copyfile(src, Path(dest) / f"{i:06d}-{src.name}")  # unique, in metadata order
    return len(images)
