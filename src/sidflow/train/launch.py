"""Start a student training from a JSON-able spec, in-process or under ``torchrun``.

    sidflow train-student --spec spec.json                       # one process
    torchrun --standalone --nproc_per_node 2 -m sidflow.cli train-student --spec spec.json

A spec is ``{"student": {...StudentConfig}, "distill": {...DistillConfig}, "manifests": [...],
"processed_dirs": [...], "cache_paths": {teacher: [...]}, "out_dir": ..., "checkpoint_dir": ...,
"preprocess": {...}}``, and ``"kfold": k`` to train one model per fold (:mod:`sidflow.train.kfold`).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from sidflow.io import read_json, write_json

log = logging.getLogger(__name__)


def run_spec(spec: dict) -> dict:
    from sidflow.models.student import StudentConfig
    from sidflow.train.distill import DistillConfig, train_student

    def one(out_dir, checkpoint_dir, fold=None) -> dict:
        return train_student(
            student_cfg=StudentConfig(**spec["student"]),
            cfg=DistillConfig(**spec["distill"]),
            manifests=spec["manifests"],
            processed_dirs=spec["processed_dirs"],
            cache_paths=spec.get("cache_paths") or {},
            out_dir=out_dir,
            preprocess=spec.get("preprocess"),
            checkpoint_dir=checkpoint_dir,
            fold=fold,
        )

    k = int(spec.get("kfold") or 0)
    if not k:
        return one(spec["out_dir"], spec.get("checkpoint_dir"))
    from sidflow.train.kfold import train_folds

    ckpt = spec.get("checkpoint_dir") or f"{spec['out_dir']}.ckpt"
    return train_folds(lambda f, out, c: one(out, c, (f, k)), spec["out_dir"], ckpt, k)


def run_spec_file(path: str | Path) -> dict:
    return run_spec(read_json(path))


def torchrun_command(spec_path: str | Path, nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "sidflow.cli", "train-student", "--spec", str(spec_path)]  # fmt: skip


def launch_student_training(spec: dict, nproc: int = 0, log_path: str | None = None) -> dict | None:
    """In this process when ``nproc`` <= 1, else ``nproc`` DDP processes via torchrun."""
    if nproc <= 1:
        return run_spec(spec)
    spec_path = Path(f"{spec['out_dir']}.spec.json")
    write_json(spec_path, spec)
    cmd = torchrun_command(spec_path, nproc)
    log.info("launching %s", " ".join(cmd))
    with open(log_path or "/dev/null", "a") as out:
        subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT)
    spec_path.unlink(missing_ok=True)
    return read_json(Path(spec["out_dir"]) / "student.json")
