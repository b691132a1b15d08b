"""dvc.yaml against the real DVC: repro, push, wipe, pull, no recompute.

A git + DVC copy of the project with a tiny ``config.yaml`` (the dvc stages read the default
config) runs ``dvc repro``; ``dvc push`` goes to a temporary local remote; the cache and every
output are deleted and ``dvc pull`` must restore identical files; ``dvc repro`` then has
nothing to do, and ``snakemake --touch`` makes Snakemake agree without recomputing.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import CONFIGS, REPO, planned_jobs, run_snakemake

pytestmark = [pytest.mark.dvc, pytest.mark.timeout(2400)]

TINY = yaml.safe_load((CONFIGS / "dvc-tiny.yaml").read_text())


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def sh(cwd, *cmd, env=None, timeout=1800):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{(r.stdout + r.stderr)[-4000:]}"
    return r.stdout + r.stderr


def tree_hashes(root: Path, dirs) -> dict[str, str]:
    out = {}
    for d in dirs:
        for p in sorted((root / d).rglob("*")):
            if p.is_file() and p.name != ".snakemake_timestamp":
                out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    try:
        import dvc  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("dvc is not installed; .ci/run installs '.[dvc]'")
        pytest.skip("pip install -e '.[dvc]'")
    work = tmp_path_factory.mktemp("dvc") / "sidflow"
    work.mkdir()
    for name in ("Snakefile", "workflow", "config", "profiles", "src", "dvc.yaml", ".dvc",
                 ".dvcignore", ".gitignore"):  # fmt: skip
        src = REPO / name
        ignore = shutil.ignore_patterns("cache", "tmp", "config.local", "__pycache__", "*.egg-info")
        (
            shutil.copytree(src, work / name, ignore=ignore)
            if src.is_dir()
            else shutil.copy(src, work / name)
        )
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg = merge(cfg, TINY["config"])
    for t in cfg["teachers"].values():
        t.update(merge(t, TINY["every_teacher"]))
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")  # fmt: skip
    sh(work, "git", "init", "-q", env=env)
    sh(work, "git", "add", "-A", env=env)
    sh(work, "git", "commit", "-qm", "tiny", env=env)
    remote = work.parent / "remote"
    dvc = [sys.executable, "-m", "dvc"]
    sh(work, *dvc, "remote", "modify", "--local", "local", "url", str(remote), env=env)
    return work, env, dvc, remote


def test_repro_push_pull_restores_identical_outputs(repo):
    work, env, dvc, remote = repo
    out = sh(work, *dvc, "repro", env=env)
    assert "Running stage 'data@demo-real'" in out and "Running stage 'detectors'" in out
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert {"data@demo-real", "teacher@blip2", "detectors"} <= set(lock["stages"])
    metrics = sh(work, *dvc, "metrics", "show", "--json", env=env)
    assert "student-kd" in metrics and '"ap"' in metrics
    tracked = ["data/raw", "data/raw-index", "data/processed", "data/manifests", "results/teachers",
               "results/demo/scores", "results/demo/models", "results/report/demo"]  # fmt: skip
    before = tree_hashes(work, tracked)
    assert len(before) > 100

    sh(work, *dvc, "push", env=env)
    assert any(p.is_file() for p in remote.rglob("*"))
    for d in (".dvc/cache", "data", "results", ".snakemake", "logs"):
        shutil.rmtree(work / d, ignore_errors=True)
    sh(work, *dvc, "pull", env=env)
    assert tree_hashes(work, tracked) == before

    # a second repro has nothing to do ...
    again = sh(work, *dvc, "repro", env=env)
    assert "Running stage" not in again, again[-2000:]
    # ... and neither has Snakemake once the pulled files' times are put in DAG order
    r = run_snakemake(work, "--touch")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_snakemake(work, "-n")
    assert r.returncode == 0 and planned_jobs(r.stdout + r.stderr) == {}, r.stdout[-3000:]
