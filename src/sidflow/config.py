"""Configuration: validation against the JSON Schema and the generators sheet.

The Snakefile validates with ``snakemake.utils.validate``; this module gives the
same checks (and the derived lists the rules need) to Python callers and tests::

    cfg = load_config("config.yaml", overlays=["experiments/cifake.yaml"])
    plan = Plan(cfg, load_sheet(cfg["generators_sheet"]))
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

from sidflow.registry import DETECTOR_KINDS, DetectorKind, UnknownNameError

SCHEMA_DIR = Path("workflow/schemas")
RAW_DIR = Path("data/raw")  # the download step's output: data/raw/<dataset>/<generator>
TEACHERS_DIR = "results/teachers"  # fine-tuned teachers: <name>/<key> (Plan.teacher_key)
CACHE_DIR = "results/cache"  # teacher caches: <name>/<key>/<dataset>/<generator>.parquet

# Detector names (in scores, metrics and output paths). Which kind a name is comes from
# Plan.detector_kind, never from the name itself.
AUDIT_DETECTOR = "audit-metadata"  # the shortcut audit's scores, beside the real detectors
TEACHER_DETECTOR = "teacher-{teacher}"  # a teacher scored from its cache
CAPTION_DETECTOR = "teacher-{teacher}-caption"  # the same teacher judged by its generated caption
EXPLAINER_DETECTOR = "explainer"  # the vision-language explainer scored as a detector
PROBE_DETECTOR = "probe:{backbone}/{reduction}/{classifier}/{transform}"  # a probe-grid cell


class ConfigError(ValueError):
    pass


def deep_merge(base: dict, overlay: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        out[k] = (
            deep_merge(out[k], v)
            if isinstance(v, dict) and isinstance(out.get(k), dict)
            else copy.deepcopy(v)
        )
    return out


def _with_defaults(validator_cls):
    validate_props = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


def validate(instance: dict, schema_path: str | Path, set_defaults: bool = True) -> dict:
    """Validate (and fill defaults into) ``instance``; errors name the offending key."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    cls = jsonschema.validators.validator_for(schema)
    validator = (_with_defaults(cls) if set_defaults else cls)(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        msgs = [f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in errors]
        raise ConfigError(f"invalid configuration ({schema_path}):\n  " + "\n  ".join(msgs))
    return instance


def check_semantics(cfg: dict, sheet: pd.DataFrame, sources: bool = True) -> None:
    """Checks a JSON Schema cannot express: sums, cross references; with ``sources``, that
    every local source in use exists (:func:`check_sources`)."""
    total = sum(cfg["splits"][s] for s in ("train", "val", "test"))
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"splits: fractions must sum to 1, got {total}")
    known = set(sheet["dataset"] + "/" + sheet["generator"])
    for ds in cfg["use_datasets"]:
        if ds not in cfg["datasets"]:
            raise ConfigError(f"use_datasets: {ds!r} is not in datasets")
        if ds not in set(sheet["dataset"]):
            raise ConfigError(
                f"use_datasets: {ds!r} has no generators in {cfg['generators_sheet']}"
            )
    exp = cfg["experiment"]
    active = {k for k in known if k.split("/")[0] in cfg["use_datasets"]}
    for key in exp["train_generators"] + (
        [] if exp.get("test_generators", "all") == "all" else exp["test_generators"]
    ):
        if key not in active:
            raise ConfigError(
                f"experiment: generator {key!r} is not an active generator ({sorted(active)})"
            )
    for t in exp.get("teachers", []):
        if t not in cfg.get("teachers", {}):
            raise ConfigError(f"experiment.teachers: {t!r} is not defined under teachers")
    for t in cfg.get("teachers", {}):
        if t.endswith("-caption"):
            raise ConfigError(f"teachers.{t}: a teacher name may not end in '-caption' (teacher-{t} "
                              "would be read as the caption detector of another teacher)")  # fmt: skip
    check_selection(exp, cfg)
    for name in cfg.get("perturbations", {}):
        if re.fullmatch(r"none|aug\d+", name):
            raise ConfigError(
                f"perturbations: {name!r} is reserved (clean images / RINE training views)"
            )
    kinds: dict[str, str] = {}
    for name, kind, _ in defined_detectors(cfg):
        if kinds.setdefault(name, kind) != kind:
            raise ConfigError(
                f"detector name {name!r} is both a {kinds[name]} and a {kind} "
                "(scores and models are stored by detector name)"
            )
    for name in exp.get("perturbations") or []:
        if name == "none" or name not in cfg.get("perturbations", {}):
            raise ConfigError(
                f"experiment.perturbations: {name!r} is not defined under perturbations"
            )
    if sources:
        check_sources(cfg, sheet)


def selected(exp: dict, kind: str) -> list[str]:
    """The ``student`` or ``rine`` detectors an experiment trains: its ``detectors`` selection,
    else the older ``run_students`` / ``run_rine`` list (may be empty: none), else every
    defined one (``explainer``: whether the selection leaves it in)."""
    catalogue = {"student": exp.get("students") or {}, "rine": exp.get("rine") or {}}
    if "detectors" in exp:
        if kind == "explainer":
            return [EXPLAINER_DETECTOR] if EXPLAINER_DETECTOR in exp["detectors"] else []
        return [d for d in exp["detectors"] if d in catalogue[kind]]
    if kind == "explainer":
        return [EXPLAINER_DETECTOR]
    run = exp.get(SELECTION_KEYS[kind])
    return list(run) if run is not None else list(catalogue[kind])


SELECTION_KEYS = {"student": "run_students", "rine": "run_rine"}


def check_selection(exp: dict, cfg: dict) -> None:
    """The selected detectors exist and fit the experiment; unselected definitions (the base
    config's demo detectors an overlay inherits) are not checked."""
    students, rines = exp.get("students") or {}, exp.get("rine") or {}
    if "detectors" in exp:
        older = [k for k in SELECTION_KEYS.values() if k in exp]
        if older:
            raise ConfigError(
                f"experiment.detectors and experiment.{'/'.join(older)} are both set: detectors "
                "replaces the older lists; give one selection (detectors: [...])"
            )
        known = [*students, *rines]
        if cfg.get("explainer", {}).get("enabled"):
            known.append(EXPLAINER_DETECTOR)
        for name in exp["detectors"]:
            if name not in known:
                raise ConfigError(
                    f"experiment.detectors: {name!r} is not defined (student variants under "
                    f"experiment.students, RINE detectors under experiment.rine, 'explainer' "
                    f"when explainer.enabled; defined: {sorted(known)})"
                )
    for kind, key, defined in (("rine", "run_rine", rines), ("student", "run_students", students)):
        for name in exp.get(key) or []:
            if name not in defined:
                where = "experiment.rine" if kind == "rine" else "experiment.students"
                raise ConfigError(f"experiment.{key}: {name!r} is not defined under {where}")
    teachers = exp.get("teachers", [])
    for name in selected(exp, "student"):
        variant = students[name]
        for t in variant.get("teachers", []):
            if t not in teachers:
                raise ConfigError(
                    f"experiment.students.{name}.teachers: {t!r} is not an experiment teacher"
                )
        distils = variant.get("alpha", 1.0) != 0 or variant.get("beta", 0.0) != 0
        if distils and not (variant.get("teachers") or teachers):
            raise ConfigError(
                f"experiment.students.{name}: distils from teachers (alpha/beta > 0) but "
                "experiment.teachers is empty; select the detectors this run trains with "
                "experiment.detectors (e.g. detectors: [student-nokd]) or set its alpha and beta to 0"
            )


def check_sources(cfg: dict, sheet: pd.DataFrame) -> None:
    """Every ``local`` source of a dataset in use exists. Relative paths are relative to the
    working folder (where Snakemake runs); a source whose generators are all downloaded
    (``data/raw/<dataset>/<generator>``) already is not needed any more."""
    for ds in cfg["use_datasets"]:
        source = cfg["datasets"][ds]["source"]
        if source["type"] != "local" or Path(source["path"]).exists():
            continue
        generators = sheet.loc[sheet["dataset"] == ds, "generator"]
        if len(generators) and all((RAW_DIR / ds / g).is_dir() for g in generators):
            continue
        where = "" if Path(source["path"]).is_absolute() else f" (relative to {Path.cwd()})"
        raise ConfigError(
            f"datasets.{ds}.source.path: the local source {source['path']} does not exist{where}; "
            "put the data there or fix the path"
        )


def load_sheet(path: str | Path, schema_dir: Path = SCHEMA_DIR) -> pd.DataFrame:
    sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    for i, row in enumerate(sheet.to_dict("records")):
        try:
            validate(row, schema_dir / "generators.schema.yaml", set_defaults=False)
        except ConfigError as exc:
            raise ConfigError(f"{path} row {i + 2}: {exc}") from None
    if "pair" in sheet:
        keys = set(zip(sheet["dataset"], sheet["generator"], sheet["label"], strict=True))
        for i, row in enumerate(sheet.to_dict("records")):
            if row["pair"] and (
                row["label"] != "fake" or (row["dataset"], row["pair"], "real") not in keys
            ):
                raise ConfigError(f"{path} row {i + 2}: pair {row['pair']!r} must name a real generator of "
                                  f"dataset {row['dataset']!r}, on a fake row")  # fmt: skip
    dup = sheet.duplicated(["dataset", "generator"])
    if dup.any():
        raise ConfigError(
            f"{path}: duplicated dataset/generator rows: {sheet[dup][['dataset', 'generator']].values.tolist()}"
        )
    return sheet


def read_yaml(path: str | Path) -> dict:
    """A config file or overlay: a YAML mapping. Errors name the file and the line."""
    text = Path(path).read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark, ctx = exc.problem_mark, exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        context = (
            f" ({exc.context} at line {ctx.line + 1}, column {ctx.column + 1})"
            if exc.context and ctx
            else ""
        )
        raise ConfigError(f"{path}, {where}: invalid YAML: {exc.problem}{context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if node is None:
        raise ConfigError(f"{path}, line 1: empty; expected a mapping of config keys (key: value)")
    if not isinstance(node, yaml.MappingNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
        raise ConfigError(
            f"{path}, line {node.start_mark.line + 1}: {kind} at the top level; "
            "expected a mapping of config keys (key: value)"
        )
    return yaml.safe_load(text)


def merged_config(path: str | Path, overlays=(), schema_dir: Path = SCHEMA_DIR) -> dict:
    """``path`` with ``overlays`` merged in order (as ``--configfile`` does), validated against
    the schema with its defaults filled."""
    cfg = read_yaml(path)
    for o in overlays:
        cfg = deep_merge(cfg, read_yaml(o))
    return validate(cfg, Path(schema_dir) / "config.schema.yaml")


def load_config(
    path: str | Path = "config.yaml", overlays=(), schema_dir: Path = SCHEMA_DIR
) -> dict:
    """The validated config: ``path`` with ``overlays`` merged in order, then the schema
    (defaults filled), the semantic checks and the generators sheet (as the Snakefile does)."""
    cfg = merged_config(path, overlays, schema_dir)
    expand_rine_grid(cfg)
    check_semantics(cfg, load_sheet(cfg["generators_sheet"], schema_dir))
    return cfg


# the axes a RINE grid may span, with the short names its detectors are named by
RINE_GRID_AXES = {
    "nproj": "n",
    "proj_dim": "d",
    "contrastive_weight": "c",
    "lr": "lr",
    "epochs": "e",
}


def expand_rine_grid(cfg: dict) -> list[str]:
    """``rine_grid`` -> one RINE detector per cell (``rine-grid-n2-d128-c0.2-lr0.001``...),
    each the ``base`` detector's settings with the cell's values, added to ``experiment.rine``
    (and to ``run_rine`` or ``detectors`` when that list is given); in place, after schema validation (so the
    base carries its defaults). Returns the cells' names."""
    grid = cfg.get("rine_grid")
    if not grid:
        return []
    rines = cfg["experiment"].setdefault("rine", {})
    if grid["base"] not in rines:
        raise ConfigError(
            f"rine_grid.base: {grid['base']!r} is not a RINE detector under experiment.rine"
        )
    axes = {k: grid[k] for k in RINE_GRID_AXES if grid.get(k)}
    names = []
    for values in itertools.product(*axes.values()):
        cell = dict(zip(axes, values, strict=True))
        name = "rine-grid-" + "-".join(f"{RINE_GRID_AXES[k]}{v:g}" for k, v in cell.items())
        rines[name] = {**rines[grid["base"]], **cell}
        names.append(name)
    for key in ("run_rine", "detectors"):  # a selection list selects the grid's cells too
        run = cfg["experiment"].get(key)
        if run is not None:
            cfg["experiment"][key] = list(dict.fromkeys([*run, *names]))
    return names


def config_digest(obj) -> str:
    """SHA-256 of ``obj`` as canonical JSON: a small stand-in for a config part that a rule
    renders (a ``params:`` value that changes exactly when that part does)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def probe_cells(cfg: dict) -> list[tuple[str, str, str, str]]:
    """(backbone, reduction, classifier, transform) of every probe-grid cell (none if disabled)."""
    probe = cfg.get("probe") or {}
    if not probe.get("enabled"):
        return []
    g = probe.get("grid") or {}
    axes = ("backbones", "reductions", "classifiers", "transforms")
    return list(itertools.product(*(g.get(a, []) for a in axes)))


def defined_detectors(cfg: dict) -> list[tuple[str, str, str]]:
    """(name, kind, config entry) of every detector the config defines, whether this run
    scores it or not: teachers, student and RINE variants, the metadata audit, probe cells."""
    exp = cfg["experiment"]
    out = []
    for t in cfg.get("teachers", {}):
        out += [(TEACHER_DETECTOR.format(teacher=t), "teacher", t),
                (CAPTION_DETECTOR.format(teacher=t), "teacher-caption", t)]  # fmt: skip
    out += [(s, "student", s) for s in exp.get("students") or {}]
    out += [(r, "rine", r) for r in exp.get("rine") or {}]
    out.append((AUDIT_DETECTOR, "audit", "shortcut_audit"))
    if cfg.get("explainer", {}).get("enabled"):
        out.append((EXPLAINER_DETECTOR, "explainer", "explainer"))
    for b, r, c, t in probe_cells(cfg):
        name = PROBE_DETECTOR.format(backbone=b, reduction=r, classifier=c, transform=t)
        out.append((name, "probe", f"{b}/{r}/{c}/{t}"))
    return out


@dataclass(frozen=True)
class Detector:
    """A detector name with its kind and the config entry it comes from (the teacher's
    name for a teacher, the variant's name for a student or RINE detector, the cell for a
    probe cell)."""

    name: str
    kind: DetectorKind
    source: str


@dataclass
class Plan:
    """Everything the rules derive from the config: which jobs exist."""

    cfg: dict
    sheet: pd.DataFrame
    _teacher_keys: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def generators(self) -> list[tuple[str, str]]:
        rows = self.sheet[self.sheet["dataset"].isin(self.cfg["use_datasets"])]
        return list(zip(rows["dataset"], rows["generator"], strict=True))

    def generator_row(self, dataset: str, generator: str) -> dict:
        rows = self.sheet[
            (self.sheet["dataset"] == dataset) & (self.sheet["generator"] == generator)
        ]
        if rows.empty:
            raise KeyError(f"{dataset}/{generator} is not in the generators sheet")
        return rows.iloc[0].to_dict()

    @property
    def experiment(self) -> dict:
        return self.cfg["experiment"]

    def real_pairs(self) -> dict[str, str]:
        """``dataset/fake`` -> ``dataset/real`` for the fake generators the sheet pairs with
        their own reals (the ``pair`` column); the others face every real of their dataset."""
        if "pair" not in self.sheet:
            return {}
        rows = self.sheet[self.sheet["pair"].fillna("") != ""]
        return {
            f"{d}/{g}": f"{d}/{p}"
            for d, g, p in zip(rows["dataset"], rows["generator"], rows["pair"], strict=True)
        }

    def train_keys(self) -> list[str]:
        return list(self.experiment["train_generators"])

    def test_keys(self) -> list[str]:
        t = self.experiment.get("test_generators", "all")
        return [f"{d}/{g}" for d, g in self.generators()] if t == "all" else list(t)

    def teacher_train_keys(self, teacher: str) -> list[str]:
        return list(self.cfg["teachers"][teacher].get("train_generators") or self.train_keys())

    def teacher_key(self, teacher: str) -> str:
        """Ten hex digits of what determines ``teacher``'s fine-tuned model: its settings,
        its training generators (their sheet rows and dataset sources), preprocessing, splits
        and the seed. Its model and caches live under ``<name>/<key>``, so experiments that
        train a teacher differently never replace each other's, and equal ones share it."""
        if teacher in self._teacher_keys:
            return self._teacher_keys[teacher]
        keys = self.teacher_train_keys(teacher)
        datasets = sorted({k.partition("/")[0] for k in keys})
        determined_by = {
            "teacher": teacher,
            "settings": self.cfg["teachers"][teacher],
            "train": keys,
            "rows": [self.generator_row(*k.split("/", 1)) for k in keys],
            "sources": {d: self.cfg["datasets"][d]["source"] for d in datasets},
            "preprocess": self.cfg["preprocess"],
            "splits": self.cfg["splits"],
            "seed": self.cfg["seed"],
        }
        return self._teacher_keys.setdefault(teacher, config_digest(determined_by)[:10])

    def teacher_dir(self, teacher: str) -> str:
        """The fine-tuned teacher's folder, ``results/teachers/<name>/<key>``."""
        return f"{TEACHERS_DIR}/{teacher}/{self.teacher_key(teacher)}"

    def teacher_cache(self, teacher: str, key: str) -> str:
        """The teacher's cache file of one generator (``dataset/generator`` ``key``)."""
        return f"{CACHE_DIR}/{teacher}/{self.teacher_key(teacher)}/{key}.parquet"

    def student_teachers(self, variant: str) -> list[str]:
        v = self.experiment["students"][variant]
        if v.get("alpha", 1.0) == 0 and v.get("beta", 0.0) == 0:
            return []
        return list(v.get("teachers") or self.experiment.get("teachers", []))

    def students(self) -> list[str]:
        """The student variants this run trains (:func:`selected`)."""
        return selected(self.experiment, "student")

    def rines(self) -> list[str]:
        """The RINE detectors this run trains (:func:`selected`)."""
        return selected(self.experiment, "rine")

    def trained(self) -> list[str]:
        """Detectors scored from images (students and RINE): the ones perturbations apply to."""
        return [n for n, k in self.detector_kinds().items() if k.scored_from == "images"]

    def rine_views(self) -> list[str]:
        """Cached CLIP views of the training images: ``aug1..augK``, or ``none`` if K = 0."""
        k = self.cfg.get("rine", {}).get("augment", {}).get("views", 2)
        return [f"aug{i}" for i in range(1, k + 1)] or ["none"]

    def explainer_scored(self) -> bool:
        """Whether the explainer is trained and scored as a detector in this run."""
        ex = self.cfg.get("explainer", {})
        chosen = bool(selected(self.experiment, "explainer"))
        return bool(ex.get("enabled") and ex.get("score", True) and chosen)

    # -- detectors and their kinds -----------------------------------------------------------
    def teacher_detector(self, teacher: str) -> str:
        """The detector name of ``teacher``'s scores (``teacher-<name>``)."""
        return TEACHER_DETECTOR.format(teacher=teacher)

    def caption_detector(self, teacher: str) -> str | None:
        """The detector name of ``teacher``'s caption verdicts (``teacher-<name>-caption``),
        or None when the experiment does not score caption detectors."""
        if not self.experiment.get("caption_detectors", True):
            return None
        return CAPTION_DETECTOR.format(teacher=teacher)

    def detector_kinds(self) -> dict[str, DetectorKind]:
        """Every detector the evaluate step scores, in order (teachers, students, RINE, the
        metadata audit if enabled), with its kind."""
        kinds = []
        for t in self.experiment.get("teachers", []):
            kinds.append((self.teacher_detector(t), "teacher"))
            if self.experiment.get("caption_detectors", True):
                kinds.append((self.caption_detector(t), "teacher-caption"))
        kinds += [(s, "student") for s in self.students()]
        kinds += [(r, "rine") for r in self.rines()]
        if self.explainer_scored():
            kinds.append((EXPLAINER_DETECTOR, "explainer"))
        if self.experiment.get("shortcut_audit", True):
            kinds.append((AUDIT_DETECTOR, "audit"))
        return {name: DETECTOR_KINDS.get(kind) for name, kind in kinds}

    def detectors(self) -> list[str]:
        """Every scored detector: teachers, trained ones, and the metadata audit if enabled."""
        return list(self.detector_kinds())

    def detectors_of(self, *kinds: str) -> list[str]:
        """This run's detectors of the given kinds, in :meth:`detectors` order; the kind
        ``probe`` gives the probe grid's cells (scored by the grid, not the evaluate step)."""
        for kind in kinds:
            DETECTOR_KINDS.check(kind)
        names = [n for n, k in self.detector_kinds().items() if k.name in kinds]
        if "probe" in kinds:
            names += [n for n, k, _ in defined_detectors(self.cfg) if k == "probe"]
        return names

    def defined(self, kind: str) -> list[str]:
        """Every detector of ``kind`` the config defines, run by this experiment or not."""
        DETECTOR_KINDS.check(kind)
        return [n for n, k, _ in defined_detectors(self.cfg) if k == kind]

    def detector(self, name: str) -> Detector:
        """Name, kind and config entry of any detector the config defines."""
        for n, kind, source in defined_detectors(self.cfg):
            if n == name:
                return Detector(n, DETECTOR_KINDS.get(kind), source)
        raise UnknownNameError("detector", name, [n for n, _, _ in defined_detectors(self.cfg)])

    def detector_kind(self, name: str) -> DetectorKind:
        """The kind of any detector the config defines (:class:`UnknownNameError` if none)."""
        return self.detector(name).kind
