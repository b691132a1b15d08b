"""The papers' presets plan what the papers ran: the KD study's Exp1/Exp2 on all seven
LSUN-bedroom subsets, with the KD study's students (kd-paper.yaml, kept in step)."""

import pytest
import yaml

from helpers import REPO, copy_workflow, planned_jobs, run_snakemake, write_images

LSUN = ["real", "adm", "ddpm", "iddpm", "ldm", "pndm", "sd-v1-4", "glide"]  # folders
FAKES = {"adm", "ddpm", "iddpm", "ldm", "pndm", "sd14", "glide"}  # generator names


def _preset(name: str) -> dict:
    return yaml.safe_load((REPO / "experiments" / f"{name}.yaml").read_text())


def test_exp_presets_carry_the_kd_study_students():
    paper = _preset("kd-paper")
    for name in ("exp1-ldm", "exp2-adm-ldm"):
        exp = _preset(name)
        assert exp["student"] == paper["student"] == {"arch": "resnet18", "stem": "imagenet",
                                                       "pretrained": "imagenet"}  # fmt: skip
        for key in ("teachers", "run_students", "students"):
            assert exp["experiment"][key] == paper["experiment"][key], (name, key)
    # the study's ablations: each teacher alone, no feature term, no KD; none of our extras
    students = paper["experiment"]["students"]
    assert students["student-kd-blip2"]["teachers"] == ["blip2"]
    assert students["student-kd-nofeat"]["beta"] == 0 and students["student-nokd"]["alpha"] == 0
    assert all(s.get("weighting", "fixed") == "fixed" and s.get("adjust", "none") == "none"
               for s in students.values())  # fmt: skip


@pytest.mark.workflow
@pytest.mark.parametrize("preset,train", [("exp1-ldm", {"ldm"}), ("exp2-adm-ldm", {"adm", "ldm"})])
def test_exp_presets_plan_all_seven_lsun_subsets(tmp_path, preset, train):
    work = copy_workflow(tmp_path / "wf", experiments=True)
    for i, folder in enumerate(LSUN):
        write_images(work / "data/downloads/lsun-bedroom" / folder, 3, seed=i, size=16)
    r = run_snakemake(work, "-n", "--configfile", f"experiments/{preset}.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    jobs = planned_jobs(out)
    assert jobs["preprocess"] == jobs["label"] == 8  # real + the seven fakes
    assert jobs["student_distill"] == 5  # kd-paper's five students
    for g in FAKES:  # every fake subset is scored by every student (one job writes every view)
        assert f"results/{preset}/scores/student-kd/lsun-bedroom/{g}/none.parquet" in out, g
    assert "dataset=lsun-bedroom, generator=ldm" in out
    cfg = _preset(preset)
    assert {k.split("/")[1] for k in cfg["experiment"]["train_generators"]} == {"real", *train}
    assert cfg["splits"]["test_per_generator"] == 10000


def test_lora_vs_full_preset_trains_one_teacher_three_ways(monkeypatch):
    from sidflow.config import Plan, check_semantics, load_config, load_sheet

    monkeypatch.chdir(REPO)
    cfg = load_config("config.yaml", overlays=["experiments/blip2-lora-vs-full.yaml"])
    sheet = load_sheet(cfg["generators_sheet"])
    check_semantics(cfg, sheet)
    plan = Plan(cfg, sheet)
    lora = {t: cfg["teachers"][t]["lora"] for t in cfg["experiment"]["teachers"]}
    assert {t: v["enabled"] for t, v in lora.items()} == {
        "blip2-lora": True, "blip2-lora-qformer": True, "blip2-full": False}  # fmt: skip
    assert lora["blip2-lora"]["qformer"] == [] and lora["blip2-lora-qformer"]["qformer"]
    # the same teacher otherwise: architecture, size and schedule
    same = [{k: v for k, v in cfg["teachers"][t].items() if k != "lora"} for t in lora]
    assert same[0] == same[1] == same[2]
    # run_students: [] runs no student (an empty list is not "every defined one")
    assert plan.students() == [] and plan.detectors_of("teacher", "teacher-caption") == [
        "teacher-blip2-lora", "teacher-blip2-lora-caption", "teacher-blip2-lora-qformer",
        "teacher-blip2-lora-qformer-caption", "teacher-blip2-full", "teacher-blip2-full-caption"]  # fmt: skip


@pytest.mark.workflow
def test_rine_paper_preset_evaluates_the_published_head_on_paired_sets(tmp_path):
    work = copy_workflow(tmp_path / "wf", experiments=True)
    for i, folder in enumerate(
        ("progan/car/0_real", "progan/car/1_fake", "stylegan/car/0_real", "stylegan/car/1_fake")
    ):
        write_images(work / "data/downloads/CNN_synth_testset" / folder, 3, seed=i, size=16)
    (tmp_path / "head.pth").write_bytes(b"stand-in")  # the dry run only needs the file to exist
    (work / "local.yaml").write_text(
        f"experiment: {{rine: {{rine-paper: {{weights: {tmp_path / 'head.pth'}}}}}}}\n"
    )
    r = run_snakemake(work, "-n", "--configfile", "experiments/rine-paper.yaml", "local.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    jobs = planned_jobs(out)
    # one head; scored on the six Wang2020 sets of the sheet (ProGAN, StyleGAN, BigGAN + reals)
    assert jobs["rine_train"] == 1 and jobs["score_rine"] == 6 and "student_distill" not in jobs
    assert (
        "teacher_finetune" not in jobs and "clip_train_views" not in jobs
    )  # nothing trained but the head
    cfg = _preset("rine-paper")
    assert cfg["rine"]["test_crop"] == "center" and cfg["preprocess"]["encode"] == "png"
    assert cfg["experiment"]["rine"]["rine-paper"]["weights"].endswith("model_2class_trainable.pth")


def test_probe_study_preset_spans_the_studys_grid():
    from sidflow.probe.plan import cells, check_probe, leaf_backbones

    cfg = _preset("probe-study")
    probe = cfg["probe"]
    probe.setdefault("cross", {})
    assert len(cells(probe)) == 7 * 3 * 8 * 4
    assert leaf_backbones(probe) == ["dino-b16", "dino-r50", "clip-b16"]
    combos = [b for b in probe["grid"]["backbones"] if probe["backbones"][b]["arch"] == "concat"]
    assert sorted(len(probe["backbones"][b]["parts"]) for b in combos) == [2, 2, 2, 3]
    # the randomised transforms apply with p = 0.5
    for name in ("blur-rand", "jitter-rand"):
        assert all(next(iter(step.values()))["p"] == 0.5 for step in probe["transforms"][name])
    # a catalogue backbone nobody selected is not checked against the experiment (no teachers here)
    probe["backbones"]["vitgpt2"] = {"arch": "teacher", "teacher": "vitgpt2"}
    check_probe({"probe": probe, "experiment": cfg["experiment"]})
    probe["grid"]["backbones"].append("vitgpt2")
    with pytest.raises(ValueError, match="teacher 'vitgpt2' is not in experiment.teachers"):
        check_probe({"probe": probe, "experiment": cfg["experiment"]})
