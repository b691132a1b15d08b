"""Partial reruns: after a full run, only what a changed generator subset affects reruns.

Works on a copy of the shared small run (mtimes preserved), so other tests see it unchanged.
"""

import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import planned_jobs, run_snakemake

pytestmark = pytest.mark.workflow

PER_GENERATOR = ("preprocess", "label", "metadata", "teacher_cache", "score_teacher",
                 "score_student", "score_rine", "clip_features", "clip_train_views")  # fmt: skip
TRAINING = ("teacher_finetune", "student_distill", "rine_train", "clip_backbone")


@pytest.fixture
def work(small_run, tmp_path):
    dest = tmp_path / "wf"
    shutil.copytree(small_run, dest, symlinks=True)  # copy2 keeps mtimes
    return dest


def dry_run(work):
    r = run_snakemake(work, "--configfile", "small.yaml", "-n")
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout + r.stderr


def planned_generators(out: str) -> dict[str, set[str]]:
    """rule -> generator wildcards of its planned jobs (from the dry run's job blocks)."""
    found: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        g = re.search(r"wildcards:.*?generator=([\w.-]+)", block)
        if m and g:
            found.setdefault(m.group(1), set()).add(g.group(1))
    return found


def edit_image(path, seed):
    arr = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def test_touch_without_content_change_reruns_nothing(work):
    later = os.stat(work / "results/report/smoke/index.html").st_mtime + 100
    for d in ("data/raw/demo/ae-bilinear", "data/raw/demo/real"):
        for f in (work / d).iterdir():
            if not f.name.startswith("."):  # what `touch dir/*` touches (not Snakemake's marker)
                os.utime(f, (later, later))
    out = dry_run(work)
    assert "Nothing to be done" in out, planned_jobs(out)


def test_changed_test_generator_reruns_only_its_jobs_and_new_cache_rows(work):
    raw = work / "data/raw/demo/ae-bilinear"
    first = sorted(raw.glob("*.png"))[0]
    edit_image(first, 1)  # one image changed
    for i in range(3):  # three images added
        edit_image(raw / f"added_{i}.png", 10 + i)
    out = dry_run(work)
    jobs, gens = planned_jobs(out), planned_generators(out)
    assert not set(TRAINING) & set(jobs), jobs  # ae-bilinear is a test-only generator
    assert "download" not in jobs
    for rule in PER_GENERATOR:
        assert gens.get(rule, {"ae-bilinear"}) == {"ae-bilinear"}, (rule, gens[rule])
    assert jobs["preprocess"] == jobs["label"] == jobs["metadata"] == 1
    # one job per student writes its 3 views (clean + 2 perturbations)
    assert jobs["teacher_cache"] == 2 and jobs["score_student"] == 2
    assert {"evaluate", "report", "shortcut_audit"} <= set(jobs)

    r = run_snakemake(work, "--configfile", "small.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    for teacher in ("vitgpt2", "blip2"):
        (log_path,) = (work / f"logs/teacher_cache/{teacher}").glob("*/demo/ae-bilinear.log")
        log = log_path.read_text()  # logs/teacher_cache/<name>/<key>/...: one key in this run
        cached, todo = map(int, re.findall(r"(\d+) rows cached, (\d+) to compute", log)[-1])
        # only the new and the changed image are computed (the changed one may land in the
        # train/val/test split the old one had or another, it is a new image_id either way)
        assert todo == 4 and cached == 60, log[-500:]
    assert "Nothing to be done" in dry_run(work)


def test_changed_training_generator_retrains(work):
    edit_image(sorted((work / "data/raw/demo/real").glob("*.png"))[0], 2)
    jobs = planned_jobs(dry_run(work))
    assert jobs["teacher_finetune"] == 2 and jobs["student_distill"] == 2
    assert jobs["rine_train"] == 2 and jobs["preprocess"] == 1  # rine and its rine-mean ablation


def test_experiments_never_replace_each_others_teachers(work):
    """demo -> an overlay that fine-tunes the teachers differently -> demo: the second run
    trains its own keyed teachers beside the first's, and the third run plans nothing."""
    first = {p: p.stat().st_mtime_ns for p in (work / "results/teachers").rglob("*") if p.is_file()}
    (work / "other.yaml").write_text(
        "teachers: {vitgpt2: {finetune: {epochs: 1, lr: 0.002}}}\n"
        "experiment: {name: other, teachers: [vitgpt2], detectors: [student-kd], perturbations: [],\n"
        "  test_generators: [demo/real, demo/dcgan-face], shortcut_audit: false,\n"
        "  caption_detectors: false}\n"
        "probe: {enabled: false}\ngradcam: {enabled: false}\n"
    )
    r = run_snakemake(work, "--configfile", "small.yaml", "other.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    keys = sorted(p.name for p in (work / "results/teachers/vitgpt2").iterdir())
    assert len(keys) == 2, keys  # the smoke run's key and the other run's
    assert {p: p.stat().st_mtime_ns for p in first} == first  # the first teachers untouched
    assert (work / "results/other/models/student-kd").is_dir()
    assert "Nothing to be done" in dry_run(work)


def test_a_failed_retrain_keeps_the_last_good_model(work):
    """Snakemake deletes a model before retraining it; the copy kept at the run's start is
    the last good model when the retrain fails, and the next run retrains it."""
    model = work / "results/smoke/models/student-nokd"
    before = {p.relative_to(model): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    (work / "bad.yaml").write_text(
        "experiment: {students: {student-nokd: {pretrained: no/such/weights.safetensors}}}\n"
    )
    r = run_snakemake(work, "--configfile", "small.yaml", "bad.yaml")
    assert r.returncode != 0
    assert not model.exists()  # Snakemake removed it before the failed retrain
    kept = work / "results/smoke/.last-good/student-nokd"
    assert {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*") if p.is_file()} == before
    assert (
        "the retrain of student-nokd failed" in r.stderr and str(kept.relative_to(work)) in r.stderr
    )
    jobs = planned_jobs(dry_run(work))
    assert jobs["student_distill"] == 1  # retrained next time (the missing model is not skipped)
