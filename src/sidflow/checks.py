"""The one validation path: every check the workflow runs on a config, in one function.

``workflow/rules/common.smk`` calls :func:`check_config` on the config Snakemake merged and
validated against the schema; ``sidflow validate-config`` calls :func:`load_checked`, which
merges and validates the same files and then runs the same :func:`check_config`. So the
command accepts exactly the configs the workflow accepts, with the same message::

    sidflow validate-config --configfile experiments/cifake.yaml
    python -c "from sidflow.checks import load_checked; load_checked('config.yaml', ['x.yaml'])"
"""

from __future__ import annotations

from pathlib import Path

from sidflow.config import (
    EXPLAINER_DETECTOR,
    SCHEMA_DIR,
    ConfigError,
    Plan,
    check_semantics,
    expand_rine_grid,
    load_sheet,
    merged_config,
)
from sidflow.probe.plan import check_probe


def check_config(cfg: dict, schema_dir: Path = SCHEMA_DIR, sources: bool = True) -> Plan:
    """The checks after the schema, in place on a schema-validated ``cfg``: the RINE grid's
    detectors, the generators sheet, the semantic and source checks, the probe grid. Returns
    the run's :class:`~sidflow.config.Plan`; raises :class:`~sidflow.config.ConfigError`.
    ``sources=False`` skips the check that local sources exist (planning, not running)."""
    expand_rine_grid(cfg)
    exp, explainer = cfg["experiment"], cfg.get("explainer") or {}
    if "detectors" in exp and EXPLAINER_DETECTOR not in exp["detectors"] and explainer:
        explainer["enabled"] = False  # a selection without the explainer plans none of its step
    sheet = load_sheet(cfg["generators_sheet"], schema_dir)
    check_semantics(cfg, sheet, sources=sources)
    try:
        check_probe(cfg)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from None
    return Plan(cfg, sheet)


def load_checked(
    path: str | Path = "config.yaml",
    overlays=(),
    schema_dir: Path = SCHEMA_DIR,
    sources: bool = True,
) -> tuple[dict, Plan]:
    """``path`` with ``overlays`` merged in order (as ``--configfile`` does), the schema with
    its defaults, then :func:`check_config`: the config and its plan, as the workflow sees them."""
    cfg = merged_config(path, overlays, schema_dir)
    return cfg, check_config(cfg, Path(schema_dir), sources=sources)
