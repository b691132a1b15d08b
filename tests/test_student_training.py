"""Student training behaviour: resume after a kill, early stopping, extra heads, DDP (gloo)."""

import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from sidflow.models.student import StudentConfig
from sidflow.train.distill import DistillConfig, train_student

CFG = {"alpha": 0.0, "epochs": 3, "batch_size": 16, "seed": 5, "precision": "fp32"}


def _train(ds, out, ckpt=None, **overrides):
    return train_student(StudentConfig(image_size=32), DistillConfig(**(CFG | overrides)), ds["manifests"],
                         ds["processed"], {}, out, checkpoint_dir=ckpt)  # fmt: skip


KILLED_CHILD = """
import json, os, signal, sys
from sidflow.models.student import StudentConfig
from sidflow.train.distill import DistillConfig, train_student
ds, out, ckpt, cfg = json.loads(sys.argv[1])

def hook(epoch):
    if epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill, right after the epoch-2 checkpoint

train_student(StudentConfig(image_size=32), DistillConfig(**cfg), ds["manifests"], ds["processed"], {}, out,
              checkpoint_dir=ckpt, on_epoch_end=hook)
"""


def _killed_child(ds, out, ckpt, **overrides):
    args = json.dumps(
        [{k: ds[k] for k in ("manifests", "processed")}, str(out), str(ckpt), CFG | overrides]
    )
    run = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, args], capture_output=True, timeout=600, check=False
    )
    return run.returncode


def test_resume_after_kill_reproduces_the_uninterrupted_run(tiny_dataset, tmp_path):
    # with a weight average and random shifts: both must come back from the checkpoint exactly
    extra = {"ema": 0.9, "translate": 2}
    full = _train(tiny_dataset, tmp_path / "full", **extra)
    ckpt = tmp_path / "ckpt"
    assert _killed_child(tiny_dataset, tmp_path / "part", ckpt, **extra) == -signal.SIGKILL
    assert not (tmp_path / "part").exists()  # no half-written model
    assert json.loads((ckpt / "state.json").read_text())["epoch"] == 2
    resumed = _train(tiny_dataset, tmp_path / "part", ckpt, **extra)
    assert len(resumed["history"]) == 3 and not ckpt.exists()  # checkpoint removed when done
    wa = load_file(str(tmp_path / "full" / "model.safetensors"))
    wb = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert all((wa[k] == wb[k]).all() for k in wa)
    timing = ("seconds", "images_per_s")
    strip = [
        [{k: v for k, v in h.items() if k not in timing} for h in m["history"]]
        for m in (full, resumed)
    ]
    assert strip[0] == strip[1]


def test_checkpoint_of_another_configuration_is_ignored(tiny_dataset, tmp_path):
    ckpt = tmp_path / "ckpt"
    assert _killed_child(tiny_dataset, tmp_path / "a", ckpt) == -signal.SIGKILL
    meta = _train(tiny_dataset, tmp_path / "b", ckpt, lr=1e-3)  # different lr: start afresh
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3]


def test_early_stopping_keeps_the_best_epoch(tiny_dataset, tmp_path):
    meta = _train(tiny_dataset, tmp_path / "m", epochs=30, patience=2, lr=3e-3)
    aps = [h["val_ap"] for h in meta["history"]]
    assert len(aps) < 30 and len(aps) - meta["best_epoch"] == 2
    assert meta["val_ap"] == max(aps)


def test_dual_head_student_scores_object_classes(tiny_dataset, tmp_path):
    from sidflow.evaluate.metrics import evaluate_scores
    from sidflow.evaluate.scores import score_student

    # give the toy images object classes from their names: r_0003 -> class by index parity
    # (in copies of the manifests: the session's tiny dataset is shared, read-only)
    manifests = []
    for i, man in enumerate(tiny_dataset["manifests"]):
        df = pd.read_parquet(man)
        df["object_class"] = [
            "even" if int(p[-8:-4]) % 2 == 0 else "odd" for p in df["source_path"]
        ]
        manifests.append(str(tmp_path / f"manifest{i}.parquet"))
        df.to_parquet(manifests[-1])
    tiny_dataset = tiny_dataset | {"manifests": manifests}
    meta = _train(tiny_dataset, tmp_path / "m", object_weight=0.5, generator_weight=0.5)
    assert meta["student"]["object_classes"] == ["even", "odd"]
    assert meta["student"]["generators"] == ["real", "toy/fake"]
    assert all(h["object_loss"] > 0 and h["generator_loss"] > 0 for h in meta["history"])
    assert 0 <= meta["history"][-1]["val_object_accuracy"] <= 1
    frames = []
    for i, man in enumerate(tiny_dataset["manifests"]):
        score_student(
            tmp_path / "m", man, tiny_dataset["processed"][i], "dual", tmp_path / f"s{i}.parquet"
        )
        frames.append(pd.read_parquet(tmp_path / f"s{i}.parquet"))
    scores = pd.concat(frames)
    assert set(scores["object_pred"]) <= {"even", "odd"} and scores["object_class"].notna().all()
    table = evaluate_scores(scores, ["toy/real", "toy/fake"])
    pooled = table[table["generator"] == "all"].iloc[0]
    expect = (
        scores[scores["split"] == "test"]["object_pred"]
        == scores[scores["split"] == "test"]["object_class"]
    ).mean()
    assert pooled["object_accuracy"] == pytest.approx(expect)


def test_object_head_without_classes_is_a_clear_error(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="object class"):
        _train(tiny_dataset, tmp_path / "m", object_weight=1.0)


def test_ddp_two_processes_gloo(tiny_dataset, tmp_path):
    """torchrun with 2 CPU processes (gloo): trains, both ranks agree, rank 0 writes the model."""
    from sidflow.io import write_json
    from sidflow.train.launch import torchrun_command

    spec = {"student": {"image_size": 32}, "distill": CFG | {"epochs": 2}, "manifests": tiny_dataset["manifests"],
            "processed_dirs": tiny_dataset["processed"], "cache_paths": {}, "out_dir": str(tmp_path / "ddp")}  # fmt: skip
    write_json(tmp_path / "spec.json", spec)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(torchrun_command(tmp_path / "spec.json", 2), capture_output=True, text=True, env=env,
                         timeout=600, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "DDP rank 1/2" in run.stderr and "DDP rank 0/2" in run.stderr
    meta = json.loads((tmp_path / "ddp" / "student.json").read_text())
    assert meta["world_size"] == 2 and len(meta["history"]) == 2 and 0 <= meta["threshold"] <= 1


def test_train_student_cli_runs_a_spec(tiny_dataset, tmp_path):
    from sidflow.io import write_json

    spec = {"student": {"image_size": 32}, "distill": CFG | {"epochs": 1}, "manifests": tiny_dataset["manifests"],
            "processed_dirs": tiny_dataset["processed"], "out_dir": str(tmp_path / "m")}  # fmt: skip
    write_json(tmp_path / "spec.json", spec)
    run = subprocess.run([sys.executable, "-m", "sidflow.cli", "train-student", "--spec", str(tmp_path / "spec.json")],
                         capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "m" / "model.safetensors").exists()


def test_export_onnx_and_torchscript_match_pytorch(tiny_dataset, tmp_path):
    from sidflow.cli import main
    from sidflow.models.export import run_exported
    from sidflow.models.student import load_student

    _train(tiny_dataset, tmp_path / "m", epochs=1)
    assert main(["export", "--model", str(tmp_path / "m")]) == 0
    model, _ = load_student(tmp_path / "m")
    import torch

    x = torch.randn(5, 3, 32, 32)  # another batch size than the export's sample
    with torch.no_grad():
        ref = model(x)["logits"].numpy()
    for name in ("student.onnx", "student.torchscript.pt"):
        out = run_exported(tmp_path / "m" / name, x)
        assert out.shape == (5, 2) and abs(out - ref).max() < 1e-3
    report = json.loads((tmp_path / "m" / "export.json").read_text())
    assert report["onnx"]["max_abs_diff"] < 1e-3 and report["torchscript"]["max_abs_diff"] < 1e-3


def test_weight_average_is_validated_checkpointed_and_saved(tiny_dataset, tmp_path):
    """``ema``: the saved student is the weight average (as a plain student: no wrapper keys),
    the validation history is the average's, and the checkpoint holds it (resumed exactly:
    :func:`test_resume_after_kill_reproduces_the_uninterrupted_run` trains with it)."""
    seen = []

    def hook(epoch):
        seen.append(sorted(p.name for p in (tmp_path / "ckpt").glob("*.safetensors")))

    plain = _train(tiny_dataset, tmp_path / "plain", epochs=2, translate=2)
    avg = train_student(StudentConfig(image_size=32), DistillConfig(**CFG | {"epochs": 2, "ema": 0.9, "translate": 2}),
                        tiny_dataset["manifests"], tiny_dataset["processed"], {}, tmp_path / "avg",
                        checkpoint_dir=tmp_path / "ckpt", on_epoch_end=hook)  # fmt: skip
    assert seen and all("ema.safetensors" in names for names in seen)
    wp, wa = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("plain", "avg"))
    assert set(wa) == set(wp)
    assert any(not torch.equal(wa[k], wp[k]) for k in wa if wa[k].is_floating_point())
    assert [h["val_ap"] for h in avg["history"]] != [h["val_ap"] for h in plain["history"]]
    assert avg["distill"]["ema"] == 0.9 and avg["distill"]["translate"] == 2
