"""The repository stays lint-clean: ruff (code + format) and snakefmt."""

import shutil
import subprocess

import pytest


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "src", "tests", "bench", "workflow/scripts"],
        ["snakefmt", "--check", "Snakefile", "workflow/rules"],
    ],
)
def test_lint_clean(repo, cmd):
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} not installed (pip install -e '.[dev]')")
    r = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
