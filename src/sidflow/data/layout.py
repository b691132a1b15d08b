"""Recognise how a folder of real and generated images is laid out (``sidflow dataset add``).

:func:`inspect_dataset` looks at a folder and says which generators it holds, where each one's
images are (a ``source_subdir`` of the generators sheet, possibly a glob), their label, which
real set each fake set is paired with, and which files will not be usable::

    layout = inspect_dataset("data/mine")           # raises LayoutError when it cannot tell
    for g in layout.generators:
        print(g.name, g.label, g.source_subdir, g.images, g.pair)

Recognised layouts (label folder names are case-insensitive; ``train``/``val``/``test`` split
folders anywhere above them are merged, sidflow makes its own splits by image hash):

* ``<generator>/{real,fake}/*``: each fake set paired with its own reals;
* CIFAKE ``{REAL,FAKE}/*`` (also under ``train/`` and ``test/``): one real and one fake set;
* Wang2020 / CNNDetection ``{0_real,1_fake}``: flat, per generator, or per generator and object
  class (``<generator>/<class>/{0_real,1_fake}``, the classes globbed with ``*``);
* GenImage ``<generator>/[<subset>/]<split>/{ai,nature}``: each ``ai`` paired with its ``nature``;
* a folder with CSV/TSV or JSON record files at its top (``path,label,generator[,object_class]``,
  ``path`` relative to the folder): read by the local source's ``metadata`` option.

Generator names are normalised to the sheet's pattern (lower case, other characters ``-``); a
per-generator real set is called ``<generator>-real``. Anything else (images outside label
folders, label folders of two conventions, unknown folders) is refused with a
:class:`LayoutError` naming the folders it could not place.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sidflow.data.metadata_source import canonical_generator

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # generators sheet: dataset / generator
SUBDIR_RE = re.compile(r"^[A-Za-z0-9._/*?-]*$")  # generators sheet: source_subdir
META_FILE_RE = re.compile(r"^[A-Za-z0-9._/-]+\.(json|csv|tsv)$")  # config: metadata.files
# label folder name -> (convention, label)
LABEL_FOLDERS = {
    "real": ("real/fake", "real"),
    "fake": ("real/fake", "fake"),
    "0_real": ("0_real/1_fake", "real"),
    "1_fake": ("0_real/1_fake", "fake"),
    "nature": ("ai/nature", "real"),
    "ai": ("ai/nature", "fake"),
}
SPLIT_FOLDERS = {"train", "val", "valid", "validation", "test"}
RECORD_KEYS = ("path", "label", "generator")
RECORD_LABELS = {"real": "real", "fake": "fake", "0": "real", "1": "fake"}
MAX_DEPTH = 4  # deepest label folder: GenImage <generator>/<subset>/<split>/ai
SHOW = 8  # folders / files named in a message


class LayoutError(ValueError):
    """The folder's layout is not one :func:`inspect_dataset` recognises, or is ambiguous."""


@dataclass
class Generator:
    """One generator of the dataset: a row of the generators sheet."""

    name: str  # normalised sheet name
    label: str  # real | fake
    source_subdir: str  # folder or glob inside the dataset (records: the group value)
    images: int  # usable image files
    pair: str = ""  # fakes: the real generator they are scored against ("" = every real)
    origin: str = ""  # the folder or record value it was named after


@dataclass
class Unreadable:
    """A file that the pipeline will not be able to use (it quarantines it)."""

    path: str  # relative to the dataset folder
    reason: str


@dataclass
class DatasetLayout:
    """What :func:`inspect_dataset` found in a folder."""

    root: Path
    kind: str  # human-readable layout name
    generators: list[Generator]
    unreadable: list[Unreadable] = field(default_factory=list)
    metadata: dict | None = None  # records layout: the local source's ``metadata`` option
    notes: list[str] = field(default_factory=list)  # renames, merged splits, ignored columns

    def label_counts(self) -> dict[str, int]:
        """Usable images per label."""
        out = {"real": 0, "fake": 0}
        for g in self.generators:
            out[g.label] += g.images
        return out

    def unreadable_counts(self) -> dict[str, int]:
        return dict(Counter(u.reason for u in self.unreadable))

    def get(self, name: str) -> Generator:
        return next(g for g in self.generators if g.name == name)


def normalise_name(text: str) -> str:
    """A folder or record value as a sheet name: lower case, characters outside ``a-z 0-9 . _ -``
    become ``-`` (runs collapsed), leading/trailing punctuation stripped, at most 64 long."""
    name = re.sub(r"[^a-z0-9._-]+", "-", str(text).strip().lower())
    name = re.sub(r"-{2,}", "-", name).strip("._-")[:64].rstrip("._-")
    if not NAME_RE.match(name):
        raise LayoutError(f"{text!r} cannot be made a generator name (letters or digits needed)")
    return name


def _named(text: str, notes: list[str], what: str) -> str:
    name = normalise_name(text)
    if name != text:
        notes.append(f"{what} {text!r} is named {name!r} (sheet names: a-z 0-9 . _ -)")
    return name


def check_file(path: Path, verify: bool = False) -> str | None:
    """Why ``path`` is not a usable image (None if it is): a symbolic link (the download step
    skips them), a suffix that is not an image's, an empty file, or with ``verify`` a file
    PIL cannot parse (``Image.open(...).verify()``; slower: reads every header)."""
    if path.is_symlink():
        return "symbolic link (not copied)"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image (suffix)"
    if path.stat().st_size == 0:
        return "empty file"
    if verify:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as exc:  # PIL raises many kinds for broken files
            return f"cannot be opened ({type(exc).__name__})"
    return None


def _scan_files(root: Path, files: list[Path], verify: bool, bad: list[Unreadable]) -> int:
    good = 0
    for f in files:
        reason = check_file(f, verify)
        if reason:
            bad.append(Unreadable(f.relative_to(root).as_posix(), reason))
        else:
            good += 1
    return good


def _files_under(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):  # symlinked folders are not entered
        dirnames.sort()
        out += [Path(dirpath) / f for f in sorted(filenames)]
    return out


def _walk(root: Path) -> tuple[list[PurePosixPath], list[str]]:
    """Label folders (relative) and the folders holding images outside any label folder."""
    labels, stray = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        if rel.parts and any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in filenames):
            stray.append(str(rel))
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") or d == "__MACOSX":
                continue
            if d.lower() in LABEL_FOLDERS and len(rel.parts) < MAX_DEPTH:
                labels.append(rel / d)
            else:
                keep.append(d)
        dirnames[:] = keep if len(rel.parts) < MAX_DEPTH else []
    return labels, stray


def _subdir(root: Path, folders: list[PurePosixPath], what: str) -> str:
    """One ``source_subdir`` for ``folders``: the path, or a glob with ``*`` where they differ
    (``progan/*/0_real``); characters the sheet does not allow become ``?``. The glob must
    match exactly these folders."""
    if len({len(f.parts) for f in folders}) > 1 or len({f.name for f in folders}) > 1:
        raise LayoutError(
            f"{what}: its label folders differ in depth or spelling, so no single folder or "
            f"glob holds them: {', '.join(map(str, folders[:SHOW]))}"
        )
    parts = [
        p[0] if len(set(p)) == 1 else "*" for p in zip(*(f.parts for f in folders), strict=True)
    ]
    glob = "/".join(re.sub(r"[^A-Za-z0-9._-]", "?", p) if p != "*" else p for p in parts)
    if any(c in glob for c in "*?"):
        found = {
            PurePosixPath(p.relative_to(root).as_posix()) for p in root.glob(glob) if p.is_dir()
        }
        if found != set(folders):
            extra = sorted(map(str, found - set(folders)))
            raise LayoutError(f"{what}: the glob {glob!r} would also take {', '.join(extra[:SHOW])}; "
                              "rename those folders")  # fmt: skip
    return glob


def _folder_layout(root: Path, labels: list[PurePosixPath], verify: bool) -> DatasetLayout:
    conventions = defaultdict(list)
    for f in labels:
        conventions[LABEL_FOLDERS[f.name.lower()][0]].append(str(f))
    if len(conventions) > 1:
        listed = "; ".join(f"{c}: {', '.join(v[:SHOW])}" for c, v in sorted(conventions.items()))
        raise LayoutError(f"{root}: label folders of more than one convention, cannot tell which "
                          f"layout is meant ({listed})")  # fmt: skip
    convention = next(iter(conventions))
    groups: dict[tuple[str | None, str], list[PurePosixPath]] = defaultdict(list)
    splits, nested = set(), False
    for f in labels:
        kept = [p for p in f.parent.parts if p.lower() not in SPLIT_FOLDERS]
        splits |= {p for p in f.parent.parts if p.lower() in SPLIT_FOLDERS}
        nested |= len(kept) > 1
        groups[(kept[0] if kept else None, LABEL_FOLDERS[f.name.lower()][1])].append(f)
    notes: list[str] = []
    bad: list[Unreadable] = []
    gens: list[Generator] = []
    for label in ("real", "fake"):
        if groups.get((None, label)):
            gens.append(_generator(root, label, label, groups[(None, label)], "", verify, bad))
    for origin in sorted({o for o, _ in groups if o is not None}, key=str.lower):
        name = _named(origin, notes, "folder")
        real = groups.get((origin, "real"))
        if real:
            gens.append(_generator(root, f"{name}-real", "real", real, origin, verify, bad))
        if groups.get((origin, "fake")):
            pair = f"{name}-real" if real else ""
            gens.append(_generator(root, name, "fake", groups[(origin, "fake")], origin, verify, bad, pair))  # fmt: skip
            if not real:
                notes.append(f"{name}: no real folder of its own, scored against every real image")
    per_gen = any(o is not None for o, _ in groups)
    kind = {
        "real/fake": "<generator>/{real,fake}" if per_gen else "CIFAKE-style {REAL,FAKE}",
        "0_real/1_fake": "Wang2020/CNNDetection {0_real,1_fake}" + (" per generator" if per_gen else ""),
        "ai/nature": "GenImage <generator>/<split>/{ai,nature}",
    }[convention] + (" with object-class/subset folders" if nested else "")  # fmt: skip
    if splits:
        notes.append(f"split folders {', '.join(sorted(splits))} are merged (sidflow splits by "
                     "image hash: splits: in config.yaml)")  # fmt: skip
    return DatasetLayout(root, kind, gens, bad, None, notes)


def _generator(root, name, label, folders, origin, verify, bad, pair="") -> Generator:
    what = f"{origin or 'top level'} {label}"
    if not NAME_RE.match(name):
        raise LayoutError(f"{what}: the generator name {name!r} is too long; rename the folder")
    subdir = _subdir(root, sorted(folders), what)
    files = [f for folder in sorted(folders) for f in _files_under(root / folder)]
    n = _scan_files(root, files, verify, bad)
    if n == 0:
        raise LayoutError(f"{what}: no usable image in {', '.join(map(str, folders[:SHOW]))}")
    return Generator(name, label, subdir, n, pair, origin)


def read_records(path: Path) -> list[dict] | None:
    """The records of a CSV/TSV/JSON file if it is a record file (a list of objects with
    ``path``, ``label`` and ``generator``), else None."""
    try:
        if path.suffix.lower() in (".csv", ".tsv"):
            with open(path, newline="") as fh:
                delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
                rows = list(csv.DictReader(fh, delimiter=delimiter))
        else:
            rows = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, csv.Error):
        return None
    if not isinstance(rows, list) or not rows:
        return None
    if not all(isinstance(r, dict) and all(k in r for k in RECORD_KEYS) for r in rows):
        return None
    return rows


def _rel(path) -> str:
    return PurePosixPath(str(path).replace("\\", "/")).as_posix()


def _records_layout(root: Path, files: dict[str, list[dict]], verify: bool) -> DatasetLayout:
    notes: list[str] = []
    bad: list[Unreadable] = []
    groups: dict[str, dict] = {}
    seen: dict[str, str] = {}
    problems: list[str] = []
    for fname, rows in files.items():
        if not META_FILE_RE.match(fname):
            raise LayoutError(f"{root / fname}: rename the record file to letters, digits, . _ -")
        for n, r in enumerate(rows):
            where = f"{fname} record {n + 1}"
            raw, label = str(r["generator"] or "").strip(), str(r["label"] or "").strip().lower()
            if not raw or label not in RECORD_LABELS:
                problems.append(f"{where}: generator {raw!r}, label {label!r} (want real/fake/0/1)")
                continue
            rel = PurePosixPath(_rel(r["path"]))
            if rel.is_absolute() or ".." in rel.parts or not (root / rel).is_file():
                problems.append(f"{where}: image {str(r['path'])!r} is not a file inside {root}")
                continue
            canon = canonical_generator(raw)
            g = groups.setdefault(canon, {"raw": raw, "labels": set(), "files": {}})
            g["labels"].add(RECORD_LABELS[label])
            if seen.setdefault(rel.as_posix(), canon) != canon:
                problems.append(f"{where}: {rel} is listed under two generators")
            g["files"][rel.as_posix()] = root / rel
    if problems:
        raise LayoutError(f"{root}: {len(problems)} record(s) cannot be used:\n  "
                          + "\n  ".join(problems[:SHOW]))  # fmt: skip
    gens = []
    for canon, g in sorted(groups.items()):
        if len(g["labels"]) > 1:
            raise LayoutError(f"{root}: generator {g['raw']!r} has both real and fake records")
        if not re.fullmatch(r"[a-z0-9._-]+", canon):
            raise LayoutError(f"{root}: generator {g['raw']!r} (read as {canon!r}) has characters "
                              "the sheet does not allow; rename it in the record file")  # fmt: skip
        name = _named(g["raw"], notes, "generator")
        images = _scan_files(root, list(g["files"].values()), verify, bad)
        gens.append(Generator(name, g["labels"].pop(), canon, images, "", g["raw"]))
    if any(any("object_class" in r for r in rows) for rows in files.values()):
        notes.append("object_class column not used: sidflow reads object classes from file names "
                     "(datasets.<name>.object_class)")  # fmt: skip
    spec = {"files": sorted(files), "image": "path", "group": "generator", "canonical": True}
    return DatasetLayout(root, "records (" + ", ".join(sorted(files)) + ")", gens, bad, spec, notes)


def inspect_dataset(path: str | Path, verify: bool = False) -> DatasetLayout:
    """Recognise the layout of the folder ``path`` (see the module docstring) and count its
    images per generator; ``verify`` also opens every image with PIL. Raises
    :class:`LayoutError` naming the folders it could not place."""
    root = Path(path)
    if not root.is_dir():
        raise LayoutError(f"{root} is not a folder")
    records = {
        f.name: rows
        for f in sorted(root.iterdir())
        if f.is_file() and f.suffix.lower() in (".csv", ".tsv", ".json")
        if (rows := read_records(f)) is not None
    }
    labels, stray = _walk(root)
    if records:
        layout = _records_layout(root, records, verify)
        if labels:  # the records decide, if they list every image of the label folders
            listed = {_rel(r["path"]) for rows in records.values() for r in rows}
            unlisted = sorted({str(f) for f in labels for p in _files_under(root / f)
                               if p.suffix.lower() in IMAGE_SUFFIXES
                               and p.relative_to(root).as_posix() not in listed})  # fmt: skip
            if unlisted:
                raise LayoutError(f"{root}: record files ({', '.join(records)}) and label folders "
                                  f"with images the records do not list: "
                                  f"{', '.join(unlisted[:SHOW])}; list them or keep one of the two")  # fmt: skip
            layout.notes.append(f"label folders {', '.join(map(str, labels[:SHOW]))} ignored: "
                                "the records name every image's generator")  # fmt: skip
    elif labels:
        outside = [s for s in stray if not any(PurePosixPath(s).is_relative_to(f) for f in labels)]
        top = [f.name for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        if outside or top:
            where = ([f"{len(top)} image(s) at the top level"] if top else []) + outside[:SHOW]
            raise LayoutError(f"{root}: images outside the real/fake label folders, cannot place: "
                              f"{', '.join(where)}")  # fmt: skip
        layout = _folder_layout(root, labels, verify)
    else:
        folders = sorted(
            f.name for f in root.iterdir() if f.is_dir() and not f.name.startswith(".")
        )
        raise LayoutError(
            f"{root}: unknown layout, no label folders ({', '.join(sorted(LABEL_FOLDERS))}) and no "
            f"record file with columns {', '.join(RECORD_KEYS)}; folders found: "
            f"{', '.join(folders[:SHOW]) or 'none'}"
        )
    names = Counter(g.name for g in layout.generators)
    if dup := sorted(n for n, c in names.items() if c > 1):
        raise LayoutError(
            f"{root}: several folders become the generator name(s) {dup}; rename them"
        )
    if set(layout.label_counts()) != {"real", "fake"} or 0 in layout.label_counts().values():
        raise LayoutError(f"{root}: needs real and fake images, found {layout.label_counts()}")
    return layout
