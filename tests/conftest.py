"""Fixtures shared by the tests, and the test tiers.

Tiers (pytest markers; ``pytest -m unit`` runs one): ``unit`` (fast, in-process; every test
without another tier marker is put here), ``models`` (in-process training, export and serving of
whole models: the zoo, the explainer), ``workflow`` (Snakemake end to end on the shared small
run), ``cluster`` (a real single-node SLURM), ``dvc`` (the real DVC), ``browser`` (headless
Chromium), ``data`` (needs ``../shared``; skipped cleanly without it). The README test command
and ``.ci/run`` run every tier.

Expensive things are built once per session and shared read-only: the tiny preprocessed dataset
(:func:`tiny_data`), a fine-tuned tiny teacher (:func:`tiny_teacher`) and the shrunken demo run
(:func:`small_run`). Tests that change files work on their own copies (``tmp_path``).
Helpers are in ``tests/helpers.py``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import AIGEN_ZIP, CIFAKE_ZIP, REPO, copy_workflow, run_snakemake, separable_images

TIERS = ("unit", "models", "workflow", "cluster", "dvc", "browser", "data")
# Long tests first: a failure in the expensive tiers shows early. With pytest-xdist on a bigger
# machine (``-n 4 --dist loadscope --no-loadscope-reorder``) the SLURM run, which mostly waits on
# the scheduler, then overlaps the CPU-bound runs; on 2 cores two workers oversubscribe the CPUs
# (measured slower), so the README test command is serial.
FIRST = ("test_slurm.py", "test_reruns.py", "test_workflow.py", "test_dvc.py", "test_cifake.py")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Tests using ../shared are ``data``; every test without a tier marker is ``unit``;
    the long modules run first (a stable sort: order inside a module is kept)."""
    for item in items:
        if {"cifake_zip", "aigen_zip"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(pytest.mark.unit)
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))


_TIER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Time spent per tier (setup + call + teardown; summed over workers), shown at the end."""
    tier = "+".join(t for t in TIERS if t in report.keywords) or "unit"
    _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if _TIER_SECONDS:
        terminalreporter.section("seconds per tier (setup + call + teardown, summed over workers)")
        for tier, secs in sorted(_TIER_SECONDS.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{tier:>20s} {secs:8.1f} s")


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def cifake_zip() -> Path:
    if not CIFAKE_ZIP.exists():
        pytest.skip("../shared/datasets/cifake is absent (outside this workplace)")
    return CIFAKE_ZIP


@pytest.fixture
def aigen_zip() -> Path:
    if not AIGEN_ZIP.exists():
        pytest.skip("../shared/datasets/aigen-vqa is absent (outside this workplace)")
    return AIGEN_ZIP


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """Two generators (real, fake) preprocessed and labelled once per session (read-only)."""
    from sidflow.data.manifest import label_generator
    from sidflow.data.preprocess import PreprocessParams, preprocess_generator

    root = tmp_path_factory.mktemp("tiny-data")
    out = {"manifests": [], "processed": [], "raw": root / "raw"}
    for gen, fake in (("real", False), ("fake", True)):
        separable_images(root / "raw" / gen, 60, fake, seed=int(fake))
        proc = root / "processed" / gen
        preprocess_generator(
            root / "raw" / gen, proc, PreprocessParams(image_size=32, jpeg_quality=95)
        )
        man = root / "manifests" / f"{gen}.parquet"
        label_generator(proc, man, root / "manifests" / f"{gen}.dup.parquet", "toy", gen,
                        "fake" if fake else "real", {"train": 0.6, "val": 0.2, "test": 0.2})  # fmt: skip
        out["manifests"].append(str(man))
        out["processed"].append(str(proc))
    return out


@pytest.fixture
def tiny_dataset(tiny_data, tmp_path) -> dict:
    """The session's tiny dataset plus a fresh ``root`` folder of this test's own holding a
    copy of the raw images: ``{'manifests': [...], 'processed': [...], 'root': tmp_path}``."""
    shutil.copytree(tiny_data["raw"], tmp_path / "raw")
    return {"manifests": list(tiny_data["manifests"]), "processed": list(tiny_data["processed"]),
            "root": tmp_path}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_teacher(tiny_data, tmp_path_factory) -> dict:
    """A tiny ViT-GPT2 teacher fine-tuned once per session on :func:`tiny_data` (read-only):
    ``{'teacher': model folder, 'card': its card}``."""
    from sidflow.models.teachers import TeacherConfig
    from sidflow.train.teacher import FinetuneConfig, finetune_teacher

    out = tmp_path_factory.mktemp("tiny-teacher") / "teacher"
    cfg = TeacherConfig(tiny={"hidden_size": 32, "layers": 1, "heads": 2, "patch_size": 8})
    card = finetune_teacher("vitgpt2", cfg, FinetuneConfig(epochs=2, batch_size=16, lr=2e-3),
                            tiny_data["manifests"], tiny_data["processed"], out)  # fmt: skip
    return {"teacher": out, "card": card}


@pytest.fixture(scope="session")
def tiny_student(tiny_data, tmp_path_factory) -> Path:
    """A no-KD student trained 1 epoch on :func:`tiny_data` once per session (read-only)."""
    from sidflow.models.student import StudentConfig
    from sidflow.train.distill import DistillConfig, train_student

    out = tmp_path_factory.mktemp("tiny-student") / "student"
    train_student(StudentConfig(image_size=32), DistillConfig(alpha=0.0, epochs=1, batch_size=16, seed=3),
                  tiny_data["manifests"], tiny_data["processed"], {}, out,
                  preprocess={"image_size": 32, "jpeg_quality": 95})  # fmt: skip
    return out


@pytest.fixture(scope="session")
def tiny_explainer(tmp_path_factory) -> Path:
    """An untrained tiny explainer saved once per session (read-only): its folder."""
    from sidflow.models.explainer import Explainer, ExplainerConfig

    out = tmp_path_factory.mktemp("tiny-explainer") / "explainer"
    Explainer.build(
        ExplainerConfig(vision_layers=1, text_layers=1), ["Real. A photo.", "Fake."]
    ).save(out)
    return out


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """The shrunken demo (``tests/configs/small.yaml``) run once, locally (``--cores 2``), for
    every workflow, rerun and SLURM test that needs it, once per test run even with several
    pytest-xdist workers (the first builds it under a file lock, the others reuse it).
    Read-only: copy it to change it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the pytest-xdist workers of this run
    work, done = root / "small-run", root / "small-run.done"
    with FileLock(str(root / "small-run.lock")):
        if not done.exists():
            shutil.rmtree(work, ignore_errors=True)  # a half-built run from a failed attempt
            copy_workflow(work)
            r = run_snakemake(work, "--configfile", "small.yaml")
            assert r.returncode == 0, r.stderr[-4000:]
            done.touch()
    return work
