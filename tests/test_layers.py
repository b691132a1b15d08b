"""The layer contract (import-linter, configured in pyproject.toml) and the registries.

Layers, bottom to top: registry → io/devices/tables/thresholds → config → data → models →
cache → train → evaluate → probe/audit → report → predict/matrix → cli. Every import counts,
including those inside functions (import-linter reads them all).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sidflow.registry import (
    DETECTOR_KINDS,
    PROBE_BACKBONES,
    PROBE_CLASSIFIERS,
    STUDENTS,
    TEACHERS,
    Registry,
    UnknownNameError,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
LINT = [
    sys.executable,
    "-c",
    "from importlinter.cli import lint_imports_command; lint_imports_command()",
]


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [*LINT, "--config", "pyproject.toml", "--no-cache"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_package_keeps_the_layer_contract():
    r = _lint(REPO, REPO / "src")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "1 kept, 0 broken" in r.stdout


@pytest.mark.parametrize(
    ("module", "bad_import"),
    [
        # a data function reaching up into evaluation (hidden inside a function)
        (
            "data/images.py",
            "def _late():\n    from sidflow.evaluate.metrics import evaluate_scores\n",
        ),
        # the registry importing a model module at import time
        ("registry.py", "import sidflow.models.student\n"),
        # training reaching into evaluation's scoring
        ("train/common.py", "from sidflow.evaluate import scores\n"),
    ],
)
def test_a_wrong_import_breaks_the_contract(tmp_path, module, bad_import):
    shutil.copytree(REPO / "src" / "sidflow", tmp_path / "src" / "sidflow")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "src" / "sidflow" / module
    target.write_text(target.read_text() + "\n\n" + bad_import)
    r = _lint(tmp_path, tmp_path / "src")
    assert r.returncode != 0
    assert "BROKEN" in r.stdout and "0 kept, 1 broken" in r.stdout
    assert "sidflow." + module.removesuffix(".py").replace("/", ".") in r.stdout


def test_the_registry_module_imports_nothing_of_the_package():
    code = "import sys, sidflow.registry; print(sorted(m for m in sys.modules if m.startswith('sidflow')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['sidflow', 'sidflow.registry']"


def test_registries_resolve_without_any_prior_import():
    """Every built-in name of every registry, looked up in a fresh interpreter: no result
    depends on what was imported first, and each lazily declared module really registers it."""
    code = (
        "from sidflow import registry as r\n"
        "for reg in (r.TEACHERS, r.STUDENTS, r.PROBE_BACKBONES, r.PROBE_CLASSIFIERS, r.DETECTOR_KINDS):\n"
        "    for name in reg.names():\n"
        "        print(reg.kind, name, getattr(reg.get(name), '__name__', type(reg.get(name)).__name__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert "teacher blip2 Blip2Teacher" in lines and "teacher vitgpt2 VitGpt2Teacher" in lines
    assert "student architecture resnet18 ResNetStudent" in lines
    assert len([x for x in lines if x.startswith("probe classifier")]) == 13
    assert len([x for x in lines if x.startswith("probe backbone")]) == 6
    assert PROBE_CLASSIFIERS.create("knn3", 0).n_neighbors == 3
    assert DETECTOR_KINDS.get("rine").scored_from == "images"


def test_unknown_names_give_one_error_type_listing_the_known_names():
    with pytest.raises(UnknownNameError, match=r"unknown teacher 'gpt5'; known: blip2, vitgpt2"):
        TEACHERS.get("gpt5")
    for reg in (STUDENTS, PROBE_BACKBONES, PROBE_CLASSIFIERS, DETECTOR_KINDS):
        with pytest.raises(UnknownNameError) as err:
            reg.create("no-such-thing")
        assert err.value.known == reg.names() and reg.names()
        assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)


def test_a_registry_takes_plugins_and_lazy_entries():
    reg = Registry("widget", {"lazy-json": "json:dumps", "broken": "json"})
    assert reg.names() == ["broken", "lazy-json"]

    @reg.register("double")
    def double(x):
        return 2 * x

    assert reg.create("double", 4) == 8
    assert reg.create("lazy-json", [1]) == "[1]"
    with pytest.raises(RuntimeError, match="did not register widget 'broken'"):
        reg.get("broken")
    assert "double" in reg and reg.check("double") == "double"


def test_light_jobs_import_neither_torch_nor_transformers():
    """Data, label, metadata, evaluation, teacher-score and report jobs start in about a second:
    their entry points must not pull in torch or transformers (each Snakemake job is a process)."""
    light = ["sidflow.config", "sidflow.data.sources", "sidflow.data.preprocess",
             "sidflow.data.manifest", "sidflow.audit.metadata", "sidflow.evaluate.metrics",
             "sidflow.evaluate.scores", "sidflow.report.html"]  # fmt: skip
    code = (
        f"import sys\nfor m in {light!r}: __import__(m)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
