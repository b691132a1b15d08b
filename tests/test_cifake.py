"""CIFAKE (real CIFAR-10 vs Stable Diffusion 1.4) through the whole pipeline, reduced.

Uses the copy in ../shared (skips cleanly elsewhere): 1,200 real + 1,200 fake images,
both teachers, the KD student and the dual-head student, one short epoch each.
"""

import shutil
import subprocess
import sys
import zipfile

import pandas as pd
import pytest

from helpers import CONFIGS

pytestmark = pytest.mark.data
PER_CLASS = 1200  # images of each class taken from the 90k archive


@pytest.fixture(scope="module")
def run(tmp_path_factory, request):
    repo = request.config.rootpath
    cifake_zip = repo.parent / "shared" / "datasets" / "cifake" / "cifake-train-90k.zip"
    if not cifake_zip.exists():
        pytest.skip("../shared/datasets/cifake is absent (outside this workplace)")
    work = tmp_path_factory.mktemp("cifake")
    for name in ("Snakefile", "config.yaml", "workflow", "config", "profiles", "experiments"):
        src = repo / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    small = work / "data" / "downloads" / "cifake-small.zip"
    small.parent.mkdir(parents=True)
    with zipfile.ZipFile(cifake_zip) as zin, zipfile.ZipFile(small, "w") as zout:
        counts = {"REAL": 0, "FAKE": 0}
        for info in zin.infolist():
            kind = info.filename.split("/")[1] if info.filename.count("/") == 2 else None
            if kind in counts and counts[kind] < PER_CLASS and not info.is_dir():
                zout.writestr(info.filename, zin.read(info))
                counts[kind] += 1
    shutil.copy(CONFIGS / "cifake-ci.yaml", work / "ci.yaml")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "--configfile",
        "experiments/cifake.yaml",
        "ci.yaml",
    ]
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-4000:]
    return work


def test_cifake_students_beat_chance_clearly(run):
    m = pd.read_parquet(run / "results/cifake-ci/metrics/metrics.parquet")
    pooled = m[(m["generator"] == "all") & (m["perturbation"] == "none")].set_index("detector")
    assert set(pooled.index) == {
        "teacher-vitgpt2",
        "teacher-vitgpt2-caption",
        "teacher-blip2",
        "teacher-blip2-caption",
        "student-kd",
        "student-dual",
        "audit-metadata",
    }
    # CIFAKE's raw files are all 32x32 JPEG q75: metadata alone must not separate them
    assert pooled.loc["audit-metadata", "ap"] < 0.7
    for student in ("student-kd", "student-dual"):
        assert pooled.loc[student, "ap"] > 0.8 and pooled.loc[student, "accuracy"] > 0.7, (
            pooled.loc[student]
        )
    assert pooled.loc["student-dual", "object_accuracy"] > 0.2  # ten classes: chance is 0.1
    assert m[m["perturbation"] == "jpeg75"]["ap"].notna().any()
    html = (run / "results/report/cifake-ci/index.html").read_text()
    assert "Distillation ablation" in html and "cifake/sd14" in html
    assert "No generator is separable by metadata alone" in html and "Grad-CAM" in html


def test_cifake_object_classes_parsed_from_file_names(run):
    man = pd.read_parquet(run / "data/manifests/cifake/sd14.parquet")
    assert len(man) == PER_CLASS and man["object_class"].nunique() == 10
