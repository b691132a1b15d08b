"""profiles/slurm on a real single-node SLURM cluster (Debian's slurm-wlm, started here).

The shrunken demo runs through ``snakemake --profile profiles/slurm``; every job must be a SLURM
job that completed (slurmctld's records and the jobcomp file), GPU steps must have asked for a
GPU on the gpu partition, and the results must equal the local run's. Skips where SLURM or
root is missing, except in CI (``.ci/run`` installs SLURM).
"""

import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from helpers import CONFIGS, copy_workflow, run_snakemake
from slurm_cluster import available, jobcomp_records, scontrol_jobs, slurm_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

GPU_RULES = {"teacher_finetune", "teacher_cache", "student_distill", "score_student",
             "clip_features", "rine_train"}  # fmt: skip
# The slurm profile gives GPU steps 4-8 threads; CPU kernels sum in a thread-dependent order,
# so for a bit-for-bit comparison with the local run every job gets the local run's 1 thread.
SAME_THREADS = ["--set-threads", "preprocess=1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = available()
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        reason = reason or "pip install -e '.[slurm]'"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"SLURM test cluster unavailable in CI: {reason}")
        pytest.skip(f"SLURM test cluster unavailable: {reason}")
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as state:
        yield state


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("wf-slurm"))
    shutil.copy(CONFIGS / "slurm-lean.yaml", work / "lean.yaml")
    # status checks every second or so instead of the plugin's cluster-friendly 40 s
    r = run_snakemake(work, "--configfile", "small.yaml", "lean.yaml", "--profile", "profiles/slurm",
                      "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs",
                      "--jobs", "6",
                      *SAME_THREADS, timeout=2300)  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return work, r.stdout + r.stderr


def test_every_job_ran_as_a_completed_slurm_job(slurm_run, cluster):
    work, out = slurm_run
    submitted = dict(
        re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*?/rule_(\w+?)/", out)
    )  # jobid -> rule
    jobs = {j["JobId"]: j for j in scontrol_jobs()}
    assert submitted and set(submitted) <= set(jobs)
    rules = set(submitted.values())
    assert {"download", "preprocess", "label", "teacher_finetune", "student_distill",
            "evaluate", "report"} <= rules  # fmt: skip
    for jobid, rule in submitted.items():
        job = jobs[jobid]
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["Comment"].startswith(f"rule_{rule}")
        # --gpus=1 shows as TresPerJob, --gres=gpu:1 as TresPerNode
        gres = " ".join(v for k, v in job.items() if k.startswith("TresPer"))
        if rule in GPU_RULES:
            assert job["Partition"] == "gpu" and "gpu:1" in gres, job
        else:
            assert job["Partition"] == "cpu" and "gpu" not in gres, job
    done = {r["JobId"] for r in jobcomp_records(cluster) if r["JobState"] == "COMPLETED"}
    assert set(submitted) <= done
    # each job wrote its own SLURM log (kept here; the plugin deletes successful ones by default)
    logs = list((work / ".snakemake/slurm_logs/rule_teacher_finetune").rglob("*.log"))
    assert logs and all(p.stat().st_size > 0 for p in logs)


def test_results_equal_the_local_run(slurm_run, small_run):
    work, _ = slurm_run
    for man in sorted((small_run / "data/manifests/demo").glob("*.parquet")):
        pd.testing.assert_frame_equal(
            pd.read_parquet(man), pd.read_parquet(work / man.relative_to(small_run))
        )
    scores = sorted((work / "results/smoke/scores").rglob("*.parquet"))
    assert len(scores) >= 4 * 6  # 6 detectors (2 teachers, 2 students, RINE, audit) x 4 generators
    for path in scores:
        a, b = pd.read_parquet(small_run / path.relative_to(work)), pd.read_parquet(path)
        assert (a["image_id"] == b["image_id"]).all()
        np.testing.assert_allclose(a["p_fake"], b["p_fake"], atol=1e-5, err_msg=str(path))
    ma = pd.read_parquet(small_run / "results/smoke/metrics/metrics.parquet")
    ma = ma[ma["perturbation"] == "none"].reset_index(drop=True)
    mb = pd.read_parquet(work / "results/smoke/metrics/metrics.parquet")
    keys = ["detector", "dataset", "generator"]
    assert ma[keys].equals(mb[keys])
    for col in ("ap", "auc", "accuracy", "threshold"):
        np.testing.assert_allclose(ma[col], mb[col], atol=1e-5, err_msg=col)
