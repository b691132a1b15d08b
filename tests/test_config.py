"""Config validation: wrong keys/values fail at start naming the key; defaults; overlays."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import copy_workflow
from sidflow.config import (
    ConfigError,
    Plan,
    check_semantics,
    config_digest,
    deep_merge,
    load_config,
    load_sheet,
    validate,
)
from sidflow.registry import DETECTOR_KINDS, UnknownNameError

SCHEMA = "workflow/schemas/config.schema.yaml"


@pytest.fixture
def cfg(repo, monkeypatch):
    monkeypatch.chdir(repo)
    return yaml.safe_load((repo / "config.yaml").read_text())


def test_shipped_config_is_valid_and_defaults_filled(cfg):
    out = validate(copy.deepcopy(cfg), SCHEMA)
    assert out["experiment"]["students"]["student-kd"]["optimizer"] == "adamw"
    assert out["preprocess"]["shard_size"] == 5000


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (("preprocess", "image_sise"), 32, "preprocess: Additional properties"),
        (("preprocess", "jpeg_quality"), 101, "preprocess.jpeg_quality"),
        (("experiment", "name"), "../etc", "experiment.name"),
        (("use_datasets",), ["Demo Set"], "use_datasets.0"),
        (("datasets", "demo", "source", "type"), "ftp", "datasets.demo.source.type"),
        (("experiment", "students", "student-kd", "temperature"), 0, "temperature"),
        (("threads",), 4, "Additional properties"),
    ],
)
def test_bad_values_name_the_key(cfg, path, value, needle):
    node = cfg
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        validate(cfg, SCHEMA)
    assert needle in str(err.value)


def test_generator_name_reaching_paths_is_pattern_checked(tmp_path, repo, monkeypatch):
    monkeypatch.chdir(repo)
    sheet = tmp_path / "g.tsv"
    sheet.write_text("dataset\tgenerator\tlabel\tsource_subdir\nd\t../x\tfake\t\n")
    with pytest.raises(ConfigError, match=r"row 2: .*generator"):
        load_sheet(sheet)
    sheet.write_text("dataset\tgenerator\tlabel\tsource_subdir\nd\tok\tfake\ta/../../b\n")
    with pytest.raises(ConfigError, match="source_subdir"):
        load_sheet(sheet)


def test_semantic_checks(cfg):
    sheet = load_sheet(cfg["generators_sheet"])
    validate(cfg, SCHEMA)
    bad = copy.deepcopy(cfg)
    bad["splits"] = {"train": 0.5, "val": 0.1, "test": 0.1}
    with pytest.raises(ConfigError, match="sum to 1"):
        check_semantics(bad, sheet)
    bad = copy.deepcopy(cfg)
    bad["experiment"]["train_generators"] = ["demo/real", "cifake/sd14"]
    with pytest.raises(ConfigError, match="cifake/sd14"):
        check_semantics(bad, sheet)


def test_overlay_merges_deeply(cfg):
    merged = deep_merge(cfg, {"preprocess": {"image_size": 64}})
    assert merged["preprocess"]["image_size"] == 64 and merged["preprocess"]["jpeg_quality"] == 90


def _cifake_config(tmp_path):
    """The CIFAKE preset with its archive path pointed at a stand-in file, so the preset is
    checked the same beside ../shared and without it."""
    (tmp_path / "cifake.zip").write_bytes(b"PK")
    local = tmp_path / "local.yaml"
    local.write_text(f"datasets: {{cifake: {{source: {{path: {tmp_path / 'cifake.zip'}}}}}}}\n")
    return load_config("config.yaml", overlays=["experiments/cifake.yaml", str(local)])


def test_cifake_overlay_is_valid(repo, monkeypatch, tmp_path):
    monkeypatch.chdir(repo)
    cfg = _cifake_config(tmp_path)
    plan = Plan(cfg, load_sheet(cfg["generators_sheet"]))
    assert plan.generators() == [("cifake", "real"), ("cifake", "sd14")]
    assert plan.rines() == [] and plan.detectors() == [
        "teacher-vitgpt2",
        "teacher-vitgpt2-caption",
        "teacher-blip2",
        "teacher-blip2-caption",
        "student-kd",
        "audit-metadata",
    ]


def test_plan_lists_detectors_and_kd_teachers(cfg):
    validate(cfg, SCHEMA)
    plan = Plan(cfg, load_sheet(cfg["generators_sheet"]))
    assert plan.detectors() == [
        "teacher-vitgpt2",
        "teacher-vitgpt2-caption",
        "teacher-blip2",
        "teacher-blip2-caption",
        "student-kd",
        "student-nokd",
        "rine",
        "rine-mean",
        "explainer",
        "audit-metadata",
    ]
    cfg["experiment"]["shortcut_audit"] = False
    assert "audit-metadata" not in plan.detectors()
    cfg["experiment"]["caption_detectors"] = False
    assert plan.detectors()[:2] == ["teacher-vitgpt2", "teacher-blip2"]
    assert plan.caption_detector("blip2") is None
    cfg["experiment"]["caption_detectors"] = True
    assert plan.rine_views() == ["aug1", "aug2"]
    cfg["experiment"]["run_rine"] = ["rine-missing"]
    with pytest.raises(ConfigError, match="run_rine"):
        check_semantics(cfg, load_sheet(cfg["generators_sheet"]))
    assert plan.student_teachers("student-kd") == ["vitgpt2", "blip2"]
    assert plan.student_teachers("student-nokd") == []
    cfg["experiment"]["run_rine"] = []
    # a student may not take another detector's name (scores and models are stored by name)
    for taken, kind in (
        ("rine", "rine"),
        ("audit-metadata", "audit"),
        ("teacher-blip2", "teacher"),
        ("explainer", "explainer"),
    ):
        cfg["experiment"]["students"][taken] = {"alpha": 0.0}
        with pytest.raises(ConfigError, match=f"{taken!r} is both a ") as err:
            check_semantics(cfg, load_sheet(cfg["generators_sheet"]))
        assert {"student", kind} <= set(str(err.value).split())
        del cfg["experiment"]["students"][taken]


def test_plan_knows_every_detectors_kind(cfg):
    """Kinds are data of the plan, never parsed from a name; names and order stay."""
    validate(cfg, SCHEMA)
    plan = Plan(cfg, load_sheet(cfg["generators_sheet"]))
    expected = {
        "teacher-vitgpt2": "teacher",
        "teacher-vitgpt2-caption": "teacher-caption",
        "teacher-blip2": "teacher",
        "teacher-blip2-caption": "teacher-caption",
        "student-kd": "student",
        "student-nokd": "student",
        "rine": "rine",
        "rine-mean": "rine",
        "explainer": "explainer",
        "audit-metadata": "audit",
    }
    assert {n: k.name for n, k in plan.detector_kinds().items()} == expected
    assert list(plan.detector_kinds()) == plan.detectors()
    for name, kind in expected.items():
        assert plan.detector_kind(name) is DETECTOR_KINDS.get(kind)
    assert plan.detector("teacher-blip2").source == "blip2"
    assert plan.detector("teacher-blip2-caption").source == "blip2"
    assert plan.detectors_of("teacher-caption") == [
        "teacher-vitgpt2-caption",
        "teacher-blip2-caption",
    ]
    assert plan.detectors_of("student") == plan.students() == ["student-kd", "student-nokd"]
    assert plan.detectors_of("teacher", "rine") == [
        "teacher-vitgpt2",
        "teacher-blip2",
        "rine",
        "rine-mean",
    ]
    assert plan.trained() == ["student-kd", "student-nokd", "rine", "rine-mean", "explainer"]
    cells = plan.detectors_of("probe")
    assert cells and all(plan.detector_kind(c).name == "probe" for c in cells)
    # the same names the probe grid writes into its scores
    from sidflow.probe.grid import cell_name
    from sidflow.probe.plan import cells as grid_cells

    assert cells == [f"probe:{cell_name(*c)}" for c in grid_cells(cfg["probe"])]
    assert {plan.detector_kind(n).name for n in plan.detectors() + cells} == set(
        DETECTOR_KINDS.names()
    )
    assert not plan.detector_kind("audit-metadata").ranked
    assert plan.detector_kind("student-kd").model_card == "student.json"
    # a student whose name looks like another kind's is still a student
    cfg["experiment"]["students"]["rine-like"] = {"alpha": 0.0}
    check_semantics(cfg, load_sheet(cfg["generators_sheet"]))
    assert plan.detector_kind("rine-like").name == "student"
    # defined but not run: still known (a probe backbone may read its model), not scored
    cfg["experiment"]["run_students"] = ["student-kd"]
    assert plan.detector_kind("student-nokd").name == "student"
    assert "student-nokd" not in plan.detectors() and "student-nokd" in plan.defined("student")
    with pytest.raises(UnknownNameError, match="unknown detector 'nobody'"):
        plan.detector_kind("nobody")
    with pytest.raises(UnknownNameError, match="unknown detector kind"):
        plan.detectors_of("teachers")


def test_config_digest_is_canonical():
    a = {"x": 1, "y": {"b": [1, 2], "a": "s"}}
    b = {"y": {"a": "s", "b": [1, 2]}, "x": 1}
    assert config_digest(a) == config_digest(b) and len(config_digest(a)) == 64
    assert config_digest(a) != config_digest({**a, "x": 2})


@pytest.fixture
def fresh_checkout(tmp_path) -> Path:
    """The workflow and experiments/ without data/: a developer's own data/raw/ (a source
    already downloaded) must not change what these tests see."""
    return copy_workflow(tmp_path / "checkout", experiments=True)


def test_snakemake_rejects_bad_config_at_start(fresh_checkout, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preprocess: {image_size: 4}\n")
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad)], cwd=fresh_checkout,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode != 0
    assert "image_size" in r.stdout + r.stderr


def test_snakemake_dry_run_and_lint_are_clean(repo):
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--quiet", "rules"], cwd=repo,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lint = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Lints for" not in lint.stdout + lint.stderr


def test_probe_grid_overlay_expands_to_one_job_per_cell(repo):
    from helpers import planned_jobs

    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--configfile",
                        "experiments/probe-grid.yaml"], cwd=repo, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = planned_jobs(r.stdout + r.stderr)
    # 3 backbones x 3 reductions x 13 classifiers x 4 transforms; features only for the two
    # cached backbones (the concatenation reuses them) x 4 transforms x 4 generators
    assert jobs["probe_fit"] == 3 * 3 * 13 * 4 and jobs["probe_features"] == 2 * 4 * 4
    assert jobs["probe_rank"] == jobs["probe_cross"] == 1


# -- overlays that are not a YAML mapping (adversarial row 13) ----------------------------------
@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "line 1: empty"), ("# only a comment\n", "line 1: empty"),
     ("# presets\n- a\n- b\n", "line 2: a list"), ("just text\n", "line 1: a single value"),
     ("a: 1\nb: : c\n", "line 2, column 4: invalid YAML: mapping values are not allowed"),
     ("x: [1, 2\n", "line 2, column 1: invalid YAML: expected ',' or ']'")],
)  # fmt: skip
def test_bad_overlay_names_its_file_and_line(repo, monkeypatch, tmp_path, capsys, text, needle):
    from sidflow.cli import main

    monkeypatch.chdir(repo)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config("config.yaml", overlays=[str(bad)])
    assert f"{bad}, {needle}" in str(err.value)
    assert main(["validate-config", "--configfile", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err


# -- dataset sources (adversarial rows 14, 15) --------------------------------------------------
def _source_overlay(tmp_path, source: dict, dataset: str = "cifake"):
    overlay = tmp_path / "source.yaml"
    overlay.write_text(yaml.safe_dump({"datasets": {dataset: {"source": source}}}))
    return ["experiments/cifake.yaml", str(overlay)]


@pytest.mark.parametrize(
    ("dataset", "source", "needle"),
    [("cifake", {"type": "url", "sha256": "0" * 64}, "'url' is a required property"),
     ("demo", {"type": "local"}, "'path' is a required property")],
)  # fmt: skip
def test_source_type_requires_its_location(repo, monkeypatch, tmp_path, dataset, source, needle):
    monkeypatch.chdir(repo)
    with pytest.raises(ConfigError, match=needle) as err:
        load_config("config.yaml", overlays=_source_overlay(tmp_path, source, dataset))
    assert f"datasets.{dataset}.source" in str(err.value)


def test_missing_local_source_is_refused_at_validation(
    fresh_checkout, monkeypatch, tmp_path, capsys
):
    from sidflow.cli import main

    monkeypatch.chdir(fresh_checkout)
    missing = tmp_path / "nowhere" / "cifake.zip"
    overlays = _source_overlay(tmp_path, {"type": "local", "path": str(missing)})
    with pytest.raises(ConfigError, match="datasets.cifake.source.path") as err:
        load_config("config.yaml", overlays=overlays)
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)
    cfg = yaml.safe_load(Path("config.yaml").read_text())
    for o in overlays:
        cfg = deep_merge(cfg, yaml.safe_load(Path(o).read_text()))
    validate(cfg, SCHEMA)
    with pytest.raises(ConfigError, match="does not exist"):  # the Snakefile's check
        check_semantics(cfg, load_sheet(cfg["generators_sheet"]))
    assert main(["validate-config", *(a for o in overlays for a in ("--configfile", o))]) == 2
    assert str(missing) in capsys.readouterr().err
    missing.parent.mkdir()
    missing.write_bytes(b"PK")  # present: accepted (its content is read by the download step)
    assert load_config("config.yaml", overlays=overlays)["datasets"]["cifake"]["source"]["path"]


def test_missing_local_source_is_fine_once_downloaded(tmp_path, monkeypatch, repo):
    """Relative paths are relative to the working folder (where Snakemake runs); a source
    whose generators are all in data/raw/ already is not needed any more."""
    monkeypatch.chdir(repo)
    cfg = _cifake_config(tmp_path)
    sheet = load_sheet(cfg["generators_sheet"])
    cfg["datasets"]["cifake"]["source"]["path"] = "data/downloads/gone.zip"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/raw/cifake/real").mkdir(parents=True)
    with pytest.raises(ConfigError, match="data/downloads/gone.zip"):
        check_semantics(cfg, sheet)
    (tmp_path / "data/raw/cifake/sd14").mkdir(parents=True)
    check_semantics(cfg, sheet)
    (tmp_path / "data/downloads").mkdir()
    (tmp_path / "data/downloads/gone.zip").write_bytes(b"PK")
    (tmp_path / "data/raw/cifake/sd14").rmdir()
    check_semantics(cfg, sheet)


def test_snakemake_refuses_a_missing_local_source_at_start(fresh_checkout, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {cifake: {source: {type: local, path: data/downloads/nope.zip}}}\n"
                   "use_datasets: [cifake]\n"
                   "experiment: {train_generators: [cifake/real, cifake/sd14]}\n")  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad)], cwd=fresh_checkout,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode != 0
    assert "data/downloads/nope.zip" in r.stdout + r.stderr


def test_a_teacher_name_may_not_look_like_a_caption_detector(cfg):
    cfg["teachers"]["vit-caption"] = dict(cfg["teachers"]["vitgpt2"])
    with pytest.raises(ConfigError, match="may not end in '-caption'"):
        check_semantics(cfg, load_sheet(cfg["generators_sheet"]))


def test_pair_column_names_a_real_of_the_same_dataset(tmp_path, cfg):
    from sidflow.config import Plan

    head = "dataset\tgenerator\tlabel\tpair\n"
    good = tmp_path / "good.tsv"
    good.write_text(head + "w\tx-real\treal\t\nw\tx\tfake\tx-real\nw\ty\tfake\t\n")
    cfg["generators_sheet"] = str(good)
    assert Plan(cfg, load_sheet(good)).real_pairs() == {"w/x": "w/x-real"}
    for bad in ("w\tx-real\treal\t\nw\tx\tfake\tnope\n", "w\tx-real\treal\tx\nw\tx\tfake\t\n"):
        path = tmp_path / "bad.tsv"
        path.write_text(head + bad)
        with pytest.raises(ConfigError, match="row [23]: pair .* must name a real generator"):
            load_sheet(path)
    plan = Plan(cfg, load_sheet("config/generators.tsv"))
    assert plan.real_pairs()["wang2020/progan"] == "wang2020/progan-real"


def test_rine_grid_expands_to_one_detector_per_cell(repo, monkeypatch):
    from sidflow.config import expand_rine_grid

    monkeypatch.chdir(repo)
    cfg = load_config("config.yaml", overlays=["experiments/rine-grid.yaml"])
    plan = Plan(cfg, load_sheet(cfg["generators_sheet"]))
    cells = [r for r in plan.rines() if r.startswith("rine-grid-")]
    assert len(cells) == 3 * 4 * 4 * 1 * 1 == 48 and len(set(cells)) == 48
    cell = cfg["experiment"]["rine"]["rine-grid-n4-d128-c0.2-lr0.001-e1"]
    base = cfg["experiment"]["rine"]["rine"]
    assert (cell["nproj"], cell["proj_dim"], cell["contrastive_weight"], cell["epochs"]) == (
        4,
        128,
        0.2,
        1,
    )
    assert {k: v for k, v in cell.items() if k not in ("nproj", "proj_dim", "contrastive_weight", "lr", "epochs")} == {
        k: v for k, v in base.items() if k not in ("nproj", "proj_dim", "contrastive_weight", "lr", "epochs")}  # fmt: skip
    assert (
        expand_rine_grid(cfg) == cells and len(plan.rines()) == 48 + 2
    )  # idempotent; + rine, rine-mean
    cfg["experiment"]["run_rine"] = ["rine"]
    expand_rine_grid(cfg)
    assert plan.rines() == ["rine", *cells]  # an explicit run list gains the cells
    cfg["rine_grid"]["base"] = "rine-nope"
    with pytest.raises(ConfigError, match="rine_grid.base: 'rine-nope'"):
        expand_rine_grid(cfg)
