"""Which probe jobs exist: the grid's cells and the feature files each one reads.

Pure functions of the validated config (``probe:`` section), used by
``workflow/rules/common.smk`` and unit-tested without Snakemake.
"""

from __future__ import annotations

import itertools


def transforms(probe: dict) -> list[str]:
    """Transforms features are computed under: ``none`` (validation, clean test) + the grid's."""
    return list(dict.fromkeys(["none", *probe.get("grid", {}).get("transforms", ["none"])]))


def parts(probe: dict, backbone: str) -> list[str]:
    """The cached backbones a (possibly concatenated) backbone is made of."""
    spec = probe["backbones"][backbone]
    return list(spec["parts"]) if spec["arch"] == "concat" else [backbone]


def leaf_backbones(probe: dict) -> list[str]:
    names = (
        [*probe["grid"].get("backbones", []), cross_backbone(probe)] if probe.get("enabled") else []
    )
    return list(dict.fromkeys(p for b in names if b for p in parts(probe, b)))


def cross_backbone(probe: dict) -> str:
    grid = probe.get("grid", {}).get("backbones", [])
    return probe.get("cross", {}).get("backbone") or (grid[0] if grid else "")


def cells(probe: dict) -> list[tuple[str, str, str, str]]:
    """(backbone, reduction, classifier, transform) of every grid cell."""
    if not probe.get("enabled"):
        return []
    g = probe["grid"]
    return list(
        itertools.product(g["backbones"], g["reductions"], g["classifiers"], g["transforms"])
    )


def check_probe(cfg: dict) -> None:
    """Names in the grid must exist; concatenations are of cached backbones; teachers and
    students named by backbones must be part of the experiment."""
    probe = cfg.get("probe", {})
    if not probe.get("enabled"):
        return
    bbs, exp = probe["backbones"], cfg["experiment"]
    if not probe["grid"]["backbones"]:
        raise ValueError("probe.grid.backbones is empty")
    for kind, known in (
        ("backbones", bbs),
        ("reductions", probe["reductions"]),
        ("transforms", probe["transforms"]),
    ):
        missing = [
            n
            for n in probe["grid"][kind]
            if n not in known and not (kind == "transforms" and n == "none")
        ]
        if missing:
            raise ValueError(f"probe.grid.{kind} names {missing}, not defined under probe.{kind}")
    for name, spec in bbs.items():  # the catalogue's own consistency
        if spec["arch"] == "concat":
            bad = [p for p in spec.get("parts", []) if p not in bbs or bbs[p]["arch"] == "concat"]
            if bad or len(spec.get("parts", [])) < 2:
                raise ValueError(
                    f"probe.backbones.{name}: parts must be two or more non-concat backbones, not {bad}"
                )
    cross = cross_backbone(probe)
    if cross not in bbs:
        raise ValueError(f"probe.cross.backbone {cross!r} is not a probe backbone")
    # only the backbones this run uses are checked against the experiment: a catalogue entry
    # nobody selected (e.g. a teacher's backbone while the run has no teachers) is never in the way
    for name in leaf_backbones(probe):
        spec = bbs[name]
        hint = (
            f" (probe.grid.backbones / probe.cross.backbone select {name!r}: choose other "
            "backbones there, or probe: {enabled: false})"
        )
        if spec["arch"] == "teacher" and spec.get("teacher") not in exp["teachers"]:
            raise ValueError(
                f"probe.backbones.{name}: teacher {spec.get('teacher')!r} is not in "
                f"experiment.teachers{hint}"
            )
        if spec["arch"] == "student" and spec.get("student") not in exp.get("students", {}):
            raise ValueError(
                f"probe.backbones.{name}: student {spec.get('student')!r} is not in "
                f"experiment.students{hint}"
            )
    if probe["cross"].get("reduction", "none") not in probe["reductions"]:
        raise ValueError(
            f"probe.cross.reduction {probe['cross']['reduction']!r} is not a probe reduction"
        )
    if "none" in probe["transforms"] and probe["transforms"]["none"]:
        raise ValueError("probe.transforms.none must be the identity ([])")
