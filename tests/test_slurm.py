"""profiles/slurm on a real single-node SLURM cluster (Debian's slurm-wlm, started here).

The shrunken demo runs through ``snakemake --profile profiles/slurm``; every job must be a SLURM
job that completed (slurmctld's records and the jobcomp file), GPU steps must have asked for a
GPU on the gpu partition, and the results must equal the local run's. Skips where SLURM or
root is missing, except in CI (``.ci/run`` installs SLURM).
"""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import CONFIGS, copy_workflow, run_snakemake
from slurm_cluster import available, jobcomp_records, scontrol_jobs, slurm_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

GPU_RULES = {"teacher_finetune", "teacher_cache", "student_distill", "score_student",
             "clip_features", "clip_train_views", "rine_train", "explainer_finetune",
             "score_explainer", "vqa_eval", "explain_gallery"}  # fmt: skip
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
    # status checks every second instead of the plugin's cluster-friendly 40 s before the first
    # and 10-180 s between rounds (each round waited on is a dependency level's idle time here;
    # tests/slurm_snakemake.py turns the plugin's back-off off for this one-node test cluster)
    r = run_snakemake(work, "--configfile", "small.yaml", "lean.yaml", "--profile", "profiles/slurm",
                      "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
                      "--slurm-keep-successful-logs", "--jobs", "8", *SAME_THREADS, timeout=2300,
                      launcher=Path(__file__).with_name("slurm_snakemake.py"))  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return work, r.stdout + r.stderr


def submissions(work: Path, out: str) -> dict[str, tuple[str, list[str]]]:
    """SLURM job id -> (rule or group name, the Snakemake jobs' rules it ran). A single job's
    rule comes from its log folder (``rule_<rule>``); a group job's folder is
    ``group_<group>_<its rules>`` and its rules are read from its SLURM log, where the Snakemake
    run inside the job prints ``rule <name>:`` once per job it runs (and ``localrule <name>:``
    again from the job step)."""
    found = re.findall(
        r"submitted with SLURM jobid (\d+) \(log: (\S+?/(rule|group)_(\w+?)/\S*?)\)", out
    )
    result = {}
    for jobid, log, kind, name in found:
        if kind == "rule":
            result[jobid] = (name, [name])
        else:
            text = (work / log).read_text()  # absolute logs stay absolute under `/`
            result[jobid] = (name, re.findall(r"^rule (\w+):", text, re.MULTILINE))
    return result


def test_every_job_ran_as_a_completed_slurm_job(slurm_run, cluster):
    work, out = slurm_run
    submitted = submissions(work, out)
    jobs = {j["JobId"]: j for j in scontrol_jobs()}
    assert submitted and set(submitted) <= set(jobs)
    rules = {rule for _, ran in submitted.values() for rule in ran}
    assert {"download", "preprocess", "label", "teacher_finetune", "student_distill",
            "evaluate", "report"} <= rules  # fmt: skip
    groups = yaml.safe_load((work / "profiles/slurm/config.yaml").read_text())["groups"]
    for jobid, (name, ran) in submitted.items():
        job = jobs[jobid]
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["Comment"].startswith(f"rule_{name}")
        group = name.split("_")[0]  # group folders/comments: <group>_<its rules>
        assert ran and all(r == name or groups.get(r) == group for r in ran), (name, ran)
        # --gpus=1 shows as TresPerJob, --gres=gpu:1 as TresPerNode
        gres = " ".join(v for k, v in job.items() if k.startswith("TresPer"))
        if set(ran) & GPU_RULES:
            assert job["Partition"] == "gpu" and "gpu:1" in gres, job
        else:
            assert job["Partition"] == "cpu" and "gpu" not in gres, job
    # every Snakemake job except the local target rule ran inside a SLURM job, and the profile's
    # groups put several of them into one submission
    total = int(re.search(r"(\d+) of \1 steps \(100%\) done", out).group(1))
    assert sum(len(ran) for _, ran in submitted.values()) == total - 1
    assert len(submitted) < total - 1 - 10, (len(submitted), total)
    assert {name.split("_")[0] for name, _ in submitted.values()} >= {"data", "scores", "summary"}
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
    assert (
        len(scores) >= 4 * 6
    )  # 2 teachers x (likelihood, caption), a student, audit x 4 generators
    for path in scores:
        a, b = pd.read_parquet(small_run / path.relative_to(work)), pd.read_parquet(path)
        assert (a["image_id"] == b["image_id"]).all()
        np.testing.assert_allclose(a["p_fake"], b["p_fake"], atol=1e-5, err_msg=str(path))
    ma = pd.read_parquet(small_run / "results/smoke/metrics/metrics.parquet")
    ma = ma[ma["perturbation"] == "none"]
    mb = pd.read_parquet(work / "results/smoke/metrics/metrics.parquet")
    # the cluster run leaves out RINE, the no-KD student and the explainer
    # (tests/configs/slurm-lean.yaml); every row it has is compared with the local run's
    assert set(ma["detector"]) - set(mb["detector"]) == {"rine", "rine-mean", "student-nokd"}
    ma = ma[ma["detector"].isin(mb["detector"])].reset_index(drop=True)
    keys = ["detector", "dataset", "generator"]
    assert ma[keys].equals(mb[keys])
    for col in ("ap", "auc", "accuracy", "threshold"):
        np.testing.assert_allclose(ma[col], mb[col], atol=1e-5, err_msg=col)
