"""Keyed stores and their garbage collection (sidflow.gc, `sidflow gc`, bench --fresh)."""

import shutil

import pytest

from helpers import REPO, copy_workflow
from sidflow.checks import load_checked
from sidflow.cli import main
from sidflow.gc import own_stores, remove, stores_on_disk, unreferenced


@pytest.fixture
def root(tmp_path, monkeypatch):
    """The workflow's files with two presets: the CIFAKE run and one that trains no teacher."""
    wf = copy_workflow(tmp_path / "wf")
    (wf / "experiments").mkdir()
    for name in ("cifake.yaml", "zoo-cifake.yaml"):
        shutil.copy(REPO / "experiments" / name, wf / "experiments" / name)
    monkeypatch.chdir(wf)
    return wf


def plan(root, *overlays):
    return load_checked(root / "config.yaml", [root / o for o in overlays],
                        schema_dir=root / "workflow/schemas", sources=False)[1]  # fmt: skip


def make(root, *paths):
    for p in paths:
        (root / p).mkdir(parents=True, exist_ok=True)
        (root / p / "model.safetensors").write_bytes(b"x")


def test_teacher_key_follows_what_determines_the_teacher(root):
    demo, cifake = plan(root), plan(root, "experiments/cifake.yaml")
    assert demo.teacher_key("vitgpt2") != cifake.teacher_key("vitgpt2")  # other data, settings
    assert demo.teacher_key("vitgpt2") == plan(root).teacher_key("vitgpt2")  # deterministic
    assert demo.teacher_key("vitgpt2") != demo.teacher_key("blip2")
    other = root / "other.yaml"
    other.write_text("teachers: {vitgpt2: {finetune: {epochs: 3}}}\n")
    changed = plan(root, "other.yaml")
    assert changed.teacher_key("vitgpt2") != demo.teacher_key("vitgpt2")
    assert changed.teacher_key("blip2") == demo.teacher_key("blip2")  # untouched: shared
    assert demo.teacher_dir("vitgpt2") == f"results/teachers/vitgpt2/{demo.teacher_key('vitgpt2')}"
    assert demo.teacher_cache("blip2", "demo/real") == (
        f"results/cache/blip2/{demo.teacher_key('blip2')}/demo/real.parquet"
    )


def test_gc_lists_and_removes_only_what_no_experiment_references(root, capsys):
    demo, cifake = plan(root), plan(root, "experiments/cifake.yaml")
    keep = [demo.teacher_dir("vitgpt2"), cifake.teacher_dir("blip2"),
            f"results/cache/vitgpt2/{demo.teacher_key('vitgpt2')}"]  # fmt: skip
    stale = ["results/teachers/vitgpt2/0123456789", "results/cache/blip2/abcdef0123"]
    make(root, *keep, *stale, "results/teachers/legacy", "results/cache/.store/ab",
         "results/cache/probe/cd")  # fmt: skip
    assert set(stores_on_disk(root)) == {*keep, *stale, "results/teachers/legacy"}
    garbage, refs = unreferenced(root)
    assert sorted(garbage) == sorted([*stale, "results/teachers/legacy"])
    assert refs.failed == {}
    assert refs.stores[cifake.teacher_dir("blip2")] == {"cifake"}

    assert main(["gc"]) == 0  # lists, removes nothing
    out = capsys.readouterr()
    assert sorted(out.out.split()) == sorted(garbage) and "gc --yes" in out.err
    assert all((root / p).exists() for p in garbage)
    assert main(["gc", "--yes"]) == 0
    assert not any((root / p).exists() for p in garbage)
    assert all((root / p / "model.safetensors").exists() for p in keep)
    assert (root / "results/cache/.store/ab").is_dir() and (
        root / "results/cache/probe/cd"
    ).is_dir()
    assert not (root / "results/cache/blip2").exists()  # its only key was removed


def test_gc_keeps_what_a_given_overlay_uses_and_refuses_yes_when_a_preset_fails(root, capsys):
    (root / "mine.yaml").write_text("teachers: {vitgpt2: {finetune: {epochs: 3}}}\n")
    mine = plan(root, "mine.yaml").teacher_dir("vitgpt2")
    make(root, mine)
    assert mine in unreferenced(root)[0]
    assert mine not in unreferenced(root, extra=["mine.yaml"])[0]
    (root / "experiments" / "broken.yaml").write_text("preprocess: {jpeg_quality: 101}\n")
    assert main(["gc", "--yes", "--configfile", "mine.yaml"]) == 2
    assert "broken.yaml" in capsys.readouterr().err and (root / mine).is_dir()


def test_fresh_removes_only_the_experiments_own_stores(root):
    cifake = plan(root, "experiments/cifake.yaml")
    own = own_stores(root, ["experiments/cifake.yaml"])
    assert own == sorted(
        f"results/{kind}/{t}/{cifake.teacher_key(t)}"
        for kind in ("teachers", "cache")
        for t in ("vitgpt2", "blip2")
    )
    # a preset that trains a teacher the same way shares it: not CIFAKE's alone any more
    shutil.copy(root / "experiments/cifake.yaml", root / "experiments/cifake-copy.yaml")
    assert own_stores(root, ["experiments/cifake.yaml"]) == []


def test_remove_leaves_other_keys_of_the_same_teacher(root):
    make(root, "results/teachers/vitgpt2/0123456789", "results/teachers/vitgpt2/9876543210")
    remove(root, ["results/teachers/vitgpt2/0123456789"])
    assert sorted(p.name for p in (root / "results/teachers/vitgpt2").iterdir()) == ["9876543210"]


@pytest.mark.unit
def test_dvc_never_deletes_the_stores_experiments_share():
    """DVC deletes a stage's outputs before it reruns the stage: every keyed store that other
    experiments share (teachers, teacher caches, CLIP backbones, features) is ``persist``."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    shared = {"results/teachers", "results/cache", "results/backbones", "results/features"}
    seen = set()
    for name, stage in stages.items():
        for out in (stage.get("do") or stage).get("outs", []):
            path, opts = next(iter(out.items())) if isinstance(out, dict) else (out, {})
            if path.split("/${")[0] in shared or path in shared:
                seen.add(path.split("/${")[0])
                assert opts.get("persist") is True, f"dvc.yaml stage {name}: {path} is not persist"
    assert seen == shared
