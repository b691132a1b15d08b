"""One validation path: ``sidflow validate-config`` and the workflow (``snakemake -n``) give
the same verdict and the same message for the same overlay (sidflow.checks).

Runs in a copy of the workflow's files (tests/helpers.copy_workflow), one dry run per overlay.
"""

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import copy_workflow, run_snakemake

pytestmark = pytest.mark.workflow

BAD = {
    # a KD student inherited from the demo while the overlay has no teachers
    "kd-without-teachers": "experiment: {name: mine, teachers: []}\n",
    "schema-bound": "preprocess: {jpeg_quality: 101}\n",
    "unknown-detector": "experiment: {detectors: [student-nope]}\n",
    "two-selections": "experiment: {detectors: [student-nokd], run_students: [student-nokd]}\n",
    # the selected probe backbone reads a teacher the experiment no longer has
    "probe-teacher-backbone": (
        "experiment: {name: mine, teachers: [], detectors: [student-nokd]}\n"
        "probe: {grid: {backbones: [effnet-lite0, vitgpt2]}}\n"
    ),
    "splits-sum": "splits: {train: 0.7, val: 0.2, test: 0.2}\n",
    "unknown-dataset": "use_datasets: [nope]\n",
    "missing-local-source": (
        "datasets: {demo: {source: {type: local, path: no/such/folder}}}\nuse_datasets: [demo]\n"
    ),
    "unknown-perturbation": "experiment: {perturbations: [jpeg7]}\n",
    "rine-grid-base": "rine_grid: {base: rine-nope, nproj: [1, 2]}\n",
    # k-fold with the demo's teachers, RINE, explainer, probe grid, Grad-CAM and audit planned
    "kfold-with-teachers": "splits: {mode: kfold, k: 3}\n",
}
GOOD = {
    "one-detector": (
        "experiment: {name: mine, teachers: [], detectors: [student-nokd]}\n"
        "probe: {grid: {backbones: [effnet-lite0]}, cross: {backbone: effnet-lite0}}\n"
    ),
}


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("validation") / "wf")


def validate_cli(wf, overlay):
    cmd = [sys.executable, "-m", "sidflow.cli", "validate-config", "--configfile", overlay]
    return subprocess.run(cmd, cwd=wf, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def verdicts(wf):
    """Per overlay: (validate-config's result, the dry run's result), both run for every
    overlay up front, two at a time (each is one single-threaded process)."""
    for name, text in {**BAD, **GOOD}.items():
        (wf / f"{name}.yaml").write_text(text)

    def both(name):
        return validate_cli(wf, f"{name}.yaml"), run_snakemake(
            wf, "-n", "--configfile", f"{name}.yaml"
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip({**BAD, **GOOD}, pool.map(both, {**BAD, **GOOD}), strict=True))


def core_messages(stderr: str) -> list[str]:
    """The messages a reader needs: a schema error's per-key lines (the jsonschema message
    after ``key:``), else the whole message."""
    lines = stderr.strip().splitlines()
    if lines and lines[0].startswith("invalid configuration"):
        return [line.strip().split(": ", 1)[1] for line in lines[1:]]
    return [" ".join(stderr.split())]


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_overlay_same_verdict_and_message(verdicts, name):
    cli, snake = verdicts[name]
    assert cli.returncode == 2 and cli.stdout == "", (cli.stdout, cli.stderr)
    assert snake.returncode != 0, snake.stdout[-2000:]
    said = " ".join((snake.stdout + snake.stderr).split())
    for message in core_messages(cli.stderr):
        assert message and message in said, (message, said[-3000:])


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_overlay_accepted_by_both_and_plans_only_its_detector(verdicts, name):
    cli, snake = verdicts[name]
    assert cli.returncode == 0 and "experiment 'mine'" in cli.stdout, cli.stderr
    assert snake.returncode == 0, snake.stderr[-3000:]
    out = snake.stdout + snake.stderr
    trained = set(re.findall(r"results/mine/models/([\w.-]+)", out))
    assert trained == {"student-nokd"}, trained  # not the demo's student-kd, RINE, explainer
    for rule in ("teacher_finetune", "rine_train", "explainer_finetune", "clip_backbone"):
        assert f"rule {rule}:" not in out, rule
