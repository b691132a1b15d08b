"""The repository stays lint-clean: ruff (code + format) and snakefmt."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    # the tool installed beside this interpreter (a virtual environment run without activating it)
    tool = shutil.which(cmd[0], path=str(Path(sys.executable).parent)) or shutil.which(cmd[0])
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail(f"{cmd[0]} is not installed; .ci/run installs '.[dev]'")
        pytest.skip(f"{cmd[0]} not installed (pip install -e '.[dev]')")
    r = subprocess.run([tool, *cmd[1:]], cwd=repo, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
