"""Add your own folder of real and generated images as a dataset (``sidflow dataset add``).

    sidflow dataset add mine data/mine                  # recognise, write sheet rows + overlay
    sidflow validate-config --configfile experiments/mine.yaml
    snakemake --profile profiles/local --configfile experiments/mine.yaml

:func:`add_dataset` recognises the folder's layout (:func:`sidflow.data.layout.inspect_dataset`),
writes the dataset's rows into the generators sheet (refusing to replace rows of the same
dataset unless ``force``; other rows are kept byte for byte) and an overlay
``<overlay_dir>/<name>.yaml`` that trains a no-KD student on the chosen generators and tests on
all. Both files are written atomically. Run it from the folder Snakemake runs in: a relative
dataset path is written as given and read relative to that folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sidflow.config import SCHEMA_DIR, validate
from sidflow.data.layout import NAME_RE, DatasetLayout, LayoutError, inspect_dataset, normalise_name
from sidflow.io import atomic_path

DEFAULT_SHEET = "config/generators.tsv"
SHEET_COLUMNS = ["dataset", "generator", "label", "family", "architecture", "source_subdir",
                 "description", "pair"]  # fmt: skip
SOURCE_PATH_RE = re.compile(r"^[A-Za-z0-9._/~-]+$")  # config schema: datasets.*.source.path
SHEET_PATH_RE = re.compile(r"^[A-Za-z0-9._/-]+\.tsv$")  # config schema: generators_sheet
STUDENT = "student-nokd"
STUDENT_SETTINGS = {"alpha": 0.0, "epochs": 10, "lr": 0.002, "patience": 3}


class DatasetAddError(ValueError):
    """The dataset cannot be added as asked (bad name or path, rows or overlay already there)."""


@dataclass
class AddResult:
    """What :func:`add_dataset` found and wrote (or, with ``dry_run``, would write)."""

    name: str
    layout: DatasetLayout
    rows: list[dict]  # the sheet rows of the dataset
    overlay: dict
    sheet: Path
    overlay_path: Path
    train: list[str]  # dataset/generator keys trained on
    notes: list[str] = field(default_factory=list)
    written: bool = False

    def overlay_text(self) -> str:
        header = (
            f"# Your own data: {self.name} ({self.layout.kind}), written by `sidflow dataset add`.\n"
            f"# Its generators are the rows of dataset {self.name} in {self.sheet}.\n"
            + "".join(f"#   {c}\n" for c in self.next_commands())
            + "# Images are resized to preprocess.image_size (32 in config.yaml); for larger images\n"
            "# add e.g. `preprocess: {image_size: 256}`. Add teachers, RINE or perturbations at will.\n"
        )
        return header + yaml.safe_dump(
            self.overlay, sort_keys=False, default_flow_style=None, width=100
        )

    def next_commands(self) -> list[str]:
        return [
            f"sidflow validate-config --configfile {self.overlay_path}",
            f"snakemake --profile profiles/local --configfile {self.overlay_path}",
        ]

    def summary(self) -> str:
        """The report ``sidflow dataset add`` prints."""
        lay = self.layout
        width = max(len(g.name) for g in lay.generators)
        sub = max(len(g.source_subdir) for g in lay.generators)
        lines = [f"dataset {self.name}: {lay.kind} in {lay.root}",
                 f"  {'generator':<{width}}  label  {'images':>7}  {'source_subdir':<{sub}}  pair"]  # fmt: skip
        lines += [
            f"  {g.name:<{width}}  {g.label:<5}  {g.images:>7}  {g.source_subdir:<{sub}}  {g.pair}".rstrip()
            for g in lay.generators
        ]
        counts = lay.label_counts()
        bad = ", ".join(f"{n} {why}" for why, n in sorted(lay.unreadable_counts().items()))
        lines.append(f"images: {counts['real']} real, {counts['fake']} fake; unreadable files: "
                     f"{len(lay.unreadable)}" + (f" ({bad})" if bad else ""))  # fmt: skip
        lines += [f"  {u.path}: {u.reason}" for u in lay.unreadable[:5]]
        if len(lay.unreadable) > 5:
            lines.append(f"  ... and {len(lay.unreadable) - 5} more")
        pairs = [f"{g.name} vs {g.pair}" for g in lay.generators if g.pair]
        lines.append(
            "pairs: " + (", ".join(pairs) if pairs else "none (every fake faces every real)")
        )
        lines += [f"note: {n}" for n in lay.notes + self.notes]
        lines.append(f"train on: {', '.join(self.train)}; test on all")
        if self.written:
            lines.append(f"wrote {len(self.rows)} rows to {self.sheet} and {self.overlay_path}")
        else:
            lines.append(f"dry run: would write {len(self.rows)} rows to {self.sheet} and "
                         f"{self.overlay_path}:\n{self.overlay_text()}")  # fmt: skip
        lines += ["next:"] + [f"  {c}" for c in self.next_commands()]
        return "\n".join(lines)


def check_dataset_name(name: str) -> str:
    """``name`` if it is a valid dataset name (schema pattern, no ``/`` or ``..``)."""
    if "/" in name or ".." in name or not NAME_RE.match(name):
        raise DatasetAddError(f"dataset name {name!r}: use lower-case letters, digits, . _ - "
                              "(starting with a letter or digit, no '..', at most 64)")  # fmt: skip
    return name


def _clean(text: str) -> str:
    return re.sub(r"[\t\r\n\"]+", " ", text).strip()


def sheet_rows(name: str, path: str, layout: DatasetLayout) -> list[dict]:
    """The generators-sheet rows of the dataset, checked against the sheet schema."""
    rows = []
    for g in layout.generators:
        where = (
            f"records with generator {g.origin!r}"
            if layout.metadata
            else f"folder {g.source_subdir}"
        )
        rows.append({
            "dataset": name, "generator": g.name, "label": g.label,
            "family": "photo" if g.label == "real" else "unknown",
            "architecture": "camera" if g.label == "real" else "unknown",
            "source_subdir": g.source_subdir,
            "description": _clean(f"{g.label} images of {path}, {where} (sidflow dataset add)"),
            "pair": g.pair,
        })  # fmt: skip
    schema = SCHEMA_DIR / "generators.schema.yaml"
    # the schema is the reference (outside a checkout, the layout's own checks hold)
    if schema.is_file():
        for row in rows:
            validate(dict(row), schema, set_defaults=False)
    return rows


def choose_train(
    name: str, layout: DatasetLayout, train: list[str] | None
) -> tuple[list[str], list[str]]:
    """The ``dataset/generator`` keys to train on and notes: every generator by default; else
    the named ones (sheet names, folder names or ``name/generator`` keys) plus each named fake's
    paired reals (every real when none is paired or named)."""
    order = [g.name for g in layout.generators]
    if not train:
        return [f"{name}/{g}" for g in order], []
    chosen = []
    for t in train:
        key = t.removeprefix(f"{name}/")
        try:
            key = normalise_name(key)
        except LayoutError:
            pass
        if key not in order:
            raise DatasetAddError(
                f"--train {t!r} is not a generator of {name} (known: {', '.join(order)})"
            )
        chosen.append(key)
    if not any(layout.get(c).label == "fake" for c in chosen):
        raise DatasetAddError(f"--train {' '.join(train)}: name at least one fake generator")
    added = [layout.get(c).pair for c in chosen if layout.get(c).pair]
    if not any(layout.get(c).label == "real" for c in chosen + added):
        added += [g.name for g in layout.generators if g.label == "real"]
    added = [a for a in dict.fromkeys(added) if a not in chosen]
    notes = [f"--train: added the real set(s) {', '.join(added)}"] if added else []
    keep = set(chosen + added)
    return [f"{name}/{g}" for g in order if g in keep], notes


def build_overlay(
    name: str, path: str, layout: DatasetLayout, train_keys: list[str], sheet: str | None,
    kfold: int = 0,
) -> dict:  # fmt: skip
    """The experiment overlay: the dataset as a local source, a no-KD student trained on
    ``train_keys`` and tested on every generator; ``sheet`` when not the default sheet;
    ``kfold`` > 0: k-fold splits (every image tested once; the steps without a k-fold form off)."""
    source = {"type": "local", "path": path}
    if layout.metadata:
        source["metadata"] = dict(layout.metadata)
    overlay: dict = {"use_datasets": [name]}
    if sheet:
        overlay["generators_sheet"] = sheet
    overlay["datasets"] = {name: {"source": source, "note": f"Your own data ({layout.kind})"}}
    overlay["probe"] = {"enabled": False}
    overlay["experiment"] = {  # detectors: the selection (the demo's detectors are not run)
        "name": name, "train_generators": train_keys, "test_generators": "all",
        "teachers": [], "perturbations": [],
        "students": {STUDENT: dict(STUDENT_SETTINGS)}, "detectors": [STUDENT],
    }  # fmt: skip
    if kfold:  # sidflow.data.folds; sidflow.checks.check_kfold refuses the others by name
        overlay["splits"] = {"mode": "kfold", "k": int(kfold)}
        overlay["gradcam"] = {"enabled": False}
        overlay["experiment"]["shortcut_audit"] = False
    return overlay


def _sheet_lines(sheet: Path) -> tuple[list[str], list[str]]:
    if not sheet.is_file():
        return SHEET_COLUMNS, []
    lines = sheet.read_text().splitlines()
    if not lines or not {"dataset", "generator", "label"} <= set(lines[0].split("\t")):
        raise DatasetAddError(
            f"{sheet}: not a generators sheet (its header needs dataset, generator, label)"
        )
    return lines[0].split("\t"), lines[1:]


def write_sheet_rows(
    sheet: Path, name: str, rows: list[dict], force: bool, dry_run: bool = False
) -> int:
    """Put ``rows`` into ``sheet`` (created with the standard header if missing), where the
    dataset's old rows were (refused unless ``force``), else at the end; the other lines are
    kept as they are. Returns how many old rows were replaced."""
    header, lines = _sheet_lines(sheet)
    old = [i for i, line in enumerate(lines) if line.split("\t", 1)[0] == name]
    if old and not force:
        raise DatasetAddError(f"{sheet} already has {len(old)} rows of dataset {name!r}; "
                              "--force replaces them")  # fmt: skip
    if any(r["pair"] for r in rows) and "pair" not in header:
        raise DatasetAddError(
            f"{sheet}: the dataset pairs fakes with reals, the sheet has no pair column"
        )
    new = ["\t".join(str(r.get(c, "")) for c in header) for r in rows]
    at = old[0] if old else len(lines)
    kept = [line for i, line in enumerate(lines) if i not in set(old)]
    out = [*kept[:at], *new, *kept[at:]]
    if not dry_run:
        with atomic_path(sheet, suffix=".tsv") as tmp:
            tmp.write_text("\n".join(["\t".join(header), *out]) + "\n")
    return len(old)


def add_dataset(
    name: str,
    path: str,
    train: list[str] | None = None,
    sheet: str | Path = DEFAULT_SHEET,
    overlay_dir: str | Path = "experiments",
    force: bool = False,
    dry_run: bool = False,
    verify: bool = False,
    config: str | Path | None = "config.yaml",
    kfold: int = 0,
) -> AddResult:
    """Recognise the folder ``path``, then write dataset ``name``'s rows into ``sheet`` and the
    overlay ``<overlay_dir>/<name>.yaml`` (nothing with ``dry_run``). ``config``: refuse a name
    of its dataset catalogue (an overlay cannot remove the catalogue entry's other keys).
    ``kfold`` >= 3: the overlay uses k-fold splits (:mod:`sidflow.data.folds`)."""
    check_dataset_name(name)
    if kfold and not 3 <= kfold <= 20:
        raise DatasetAddError(
            f"--kfold {kfold}: k-fold needs 3 to 20 folds (each model trains on k-2)"
        )
    path = str(path).rstrip("/") or "/"
    if not SOURCE_PATH_RE.match(path):
        raise DatasetAddError(f"dataset path {path!r}: the config allows letters, digits, . _ / ~ - "
                              "only; rename the folder or link it under such a name")  # fmt: skip
    if (
        config
        and Path(config).is_file()
        and name in (yaml.safe_load(Path(config).read_text()) or {}).get("datasets", {})
    ):
        raise DatasetAddError(f"{name!r} is a dataset of {config}'s catalogue; pick another name")
    sheet = Path(sheet)
    sheet_key = None
    if sheet.resolve() != Path(DEFAULT_SHEET).resolve():
        sheet_key = sheet.as_posix()
        if not SHEET_PATH_RE.match(sheet_key):
            raise DatasetAddError(f"--sheet {sheet_key!r}: a .tsv path of letters, digits, . _ / -")
    overlay_path = Path(overlay_dir) / f"{name}.yaml"
    if overlay_path.exists() and not force:
        raise DatasetAddError(f"{overlay_path} exists; --force replaces it")
    layout = inspect_dataset(path, verify=verify)
    rows = sheet_rows(name, path, layout)
    train_keys, notes = choose_train(name, layout, train)
    result = AddResult(name, layout, rows, build_overlay(name, path, layout, train_keys, sheet_key, kfold),
                       sheet, overlay_path, train_keys, notes)  # fmt: skip
    replaced = write_sheet_rows(sheet, name, rows, force, dry_run)  # checks before any write
    if replaced:
        result.notes.append(f"--force: replaced the {replaced} old rows of {name} in {sheet}")
    if not dry_run:
        with atomic_path(overlay_path, suffix=".yaml") as tmp:
            tmp.write_text(result.overlay_text())
        result.written = True
    return result
