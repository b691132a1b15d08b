"""Shared stores no experiment uses: list them, and remove them only when asked.

Fine-tuned teachers live in ``results/teachers/<name>/<key>`` and their caches in
``results/cache/<name>/<key>/``, keyed by what determines them (``Plan.teacher_key``), so
experiments that train a teacher alike share it and the others never replace it. A key no
experiment plans any more (its settings changed) is garbage. The experiments are the
embedded config alone, the config with each ``experiments/*.yaml`` preset, and any overlay
given::

    sidflow gc                                  # list what no experiment references
    sidflow gc --configfile my-overlay.yaml     # also keep what my overlay uses
    sidflow gc --yes                            # remove what was listed
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sidflow.checks import load_checked
from sidflow.config import CACHE_DIR, TEACHERS_DIR, ConfigError

log = logging.getLogger(__name__)
KEY = re.compile(r"[0-9a-f]{10}")


@dataclass
class Experiments:
    """The stores the known experiments reference, and the configs that could not be planned."""

    stores: dict[str, set[str]] = field(default_factory=dict)  # store path -> experiments
    failed: dict[str, str] = field(default_factory=dict)  # config -> why


def experiment_configs(root: Path, extra=()) -> list[list[str]]:
    """Overlay lists of the known experiments: none (the embedded demo), each preset, ``extra``."""
    presets = sorted(str(p.relative_to(root)) for p in (root / "experiments").glob("*.yaml"))
    return [[], *([p] for p in presets), *([str(e)] for e in extra)]


def experiment_stores(cfg_plan) -> list[str]:
    """The teacher folders and cache folders one experiment's plan uses."""
    cfg, plan = cfg_plan
    out = []
    for t in cfg["experiment"].get("teachers", []):
        out += [plan.teacher_dir(t), f"{CACHE_DIR}/{t}/{plan.teacher_key(t)}"]
    return out


def plan_of(root: Path, overlays: list[str], config: str = "config.yaml"):
    """(config, plan) of one experiment, planned without requiring its data to be present."""
    return load_checked(root / config, [root / o for o in overlays],
                        schema_dir=root / "workflow" / "schemas", sources=False)  # fmt: skip


def referenced(root: Path, extra=(), skip=None) -> Experiments:
    """Which stores each known experiment (except the one whose overlays are ``skip``)
    references."""
    found = Experiments()
    for overlays in experiment_configs(root, extra):
        if overlays == skip:
            continue
        try:
            loaded = plan_of(root, overlays)
        except (ConfigError, OSError) as exc:
            found.failed[overlays[0] if overlays else "config.yaml"] = str(exc).splitlines()[0]
            continue
        for store in experiment_stores(loaded):
            found.stores.setdefault(store, set()).add(loaded[0]["experiment"]["name"])
    return found


def stores_on_disk(root: Path) -> list[str]:
    """Every ``<name>/<key>`` folder under the teachers and caches; a folder there that is not
    one (the layout before keys: a teacher's files straight under its name) counts whole."""
    out = []
    for base in (TEACHERS_DIR, CACHE_DIR):
        for name in sorted(p for p in (root / base).glob("*") if p.is_dir()):
            if name.name.startswith("."):  # content-addressed chunk stores stay
                continue
            children = sorted(name.iterdir())
            if children and all(c.is_dir() and KEY.fullmatch(c.name) for c in children):
                out += [f"{base}/{name.name}/{c.name}" for c in children]
            elif name.name != "probe":
                out.append(f"{base}/{name.name}")
    return out


def unreferenced(root: Path, extra=()) -> tuple[list[str], Experiments]:
    """The stores on disk that no known experiment references."""
    refs = referenced(root, extra)
    return [s for s in stores_on_disk(root) if s not in refs.stores], refs


def remove(root: Path, stores: list[str]) -> None:
    """Remove ``stores`` (paths under ``root``) and the name folders they leave empty."""
    for store in stores:
        path = root / store
        shutil.rmtree(path, ignore_errors=True)
        if path.parent.name not in ("teachers", "cache") and not any(path.parent.iterdir()):
            path.parent.rmdir()
        log.info("removed %s", store)


def own_stores(root: Path, overlays: list[str]) -> list[str]:
    """The stores the experiment of ``overlays`` references and no other known experiment
    does: what its ``--fresh`` run may delete."""
    mine = set(experiment_stores(plan_of(root, overlays)))
    return sorted(mine - set(referenced(root, skip=overlays[:1]).stores))
