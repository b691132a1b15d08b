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
from sidflow.data.folds import KFOLD_STEPS, is_kfold
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
    plan = Plan(cfg, sheet)
    check_kfold(cfg, plan)
    return plan


def check_kfold(cfg: dict, plan: Plan) -> None:
    """``splits.mode: kfold`` trains one model per fold for the steps that have a k-fold form
    (:data:`~sidflow.data.folds.KFOLD_STEPS`); every other planned step is refused by name."""
    splits = cfg["splits"]
    if not is_kfold(splits):
        return
    fixed = [k for k in ("test_per_generator", "train_per_generator") if k in splits]
    if fixed:
        raise ConfigError(f"splits: {', '.join(fixed)} cannot be combined with mode kfold "
                          "(every image is tested once, in its fold)")  # fmt: skip
    exp, blocked = cfg["experiment"], []
    if plan.detectors_of("teacher"):
        blocked.append(f"the teachers {exp.get('teachers')} (experiment.teachers: [])")
    blocked += [f"student {s!r}, which distils from teachers (set its alpha and beta to 0, "
                "or leave it out of experiment.detectors)"
                for s in plan.detectors_of("student") if plan.student_teachers(s)]  # fmt: skip
    if plan.detectors_of("rine"):
        blocked.append(f"the RINE detectors {plan.detectors_of('rine')} (leave them out of "
                       "experiment.detectors)")  # fmt: skip
    if (cfg.get("explainer") or {}).get("enabled"):
        blocked.append("the explainer (explainer: {enabled: false})")
    if (cfg.get("probe") or {}).get("enabled"):
        blocked.append("the probe grid (probe: {enabled: false})")
    if (cfg.get("gradcam") or {}).get("enabled"):
        blocked.append("the Grad-CAM gallery (gradcam: {enabled: false})")
    if exp.get("shortcut_audit"):
        blocked.append("the shortcut audit (experiment: {shortcut_audit: false})")
    if blocked:
        raise ConfigError(
            f"splits.mode kfold trains one model per fold for {KFOLD_STEPS} only; these planned "
            "steps have no k-fold form, turn them off: " + "; ".join(blocked)
        )


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
