"""Experiment presets (Exp1, Exp2) and the cross-generator / LOGO matrix."""

import pandas as pd
import pytest

from sidflow.checks import load_checked
from sidflow.config import ConfigError, Plan, load_config, load_sheet
from sidflow.matrix import collect_matrix, matrix_cells, matrix_html, write_cell_overlays


@pytest.fixture
def lsun_source(tmp_path):
    """An overlay pointing lsun-bedroom at a folder that exists (local sources are checked
    at validation; the data itself is not read here)."""
    (tmp_path / "lsun-bedroom").mkdir()
    overlay = tmp_path / "lsun-source.yaml"
    overlay.write_text(
        f"datasets: {{lsun-bedroom: {{source: {{path: {tmp_path / 'lsun-bedroom'}}}}}}}\n"
    )
    return str(overlay)


@pytest.mark.parametrize(
    "preset, train",
    [("exp1-ldm", ["lsun-bedroom/real", "lsun-bedroom/ldm"]),
     ("exp2-adm-ldm", ["lsun-bedroom/real", "lsun-bedroom/adm", "lsun-bedroom/ldm"])],
)  # fmt: skip
def test_paper_presets_train_on_their_subsets_and_test_on_all(repo, monkeypatch, preset, train,
                                                              lsun_source):  # fmt: skip
    monkeypatch.chdir(repo)
    cfg = load_config("config.yaml", overlays=[f"experiments/{preset}.yaml", lsun_source])
    plan = Plan(cfg, load_sheet(cfg["generators_sheet"]))
    assert plan.train_keys() == train
    assert set(plan.test_keys()) == {  # all seven subsets of the studies, and the reals
        f"lsun-bedroom/{g}"
        for g in ("real", "adm", "iddpm", "ldm", "pndm", "ddpm", "sd14", "glide")
    }


def test_cross_and_logo_cells(repo, monkeypatch, lsun_source):
    monkeypatch.chdir(repo)
    cfg = load_config("config.yaml", overlays=["experiments/lsun-cross.yaml", lsun_source])
    cross = matrix_cells(cfg, "cross")
    assert cross["lsun-x-lsun-bedroom-adm"] == ["lsun-bedroom/real", "lsun-bedroom/adm"]
    assert len(cross) == 7  # one cell per fake subset
    logo = matrix_cells(cfg, "logo")
    assert logo["lsun-logo-lsun-bedroom-adm"] == ["lsun-bedroom/real"] + [
        f"lsun-bedroom/{g}" for g in ("iddpm", "ldm", "pndm", "ddpm", "sd14", "glide")
    ]
    with pytest.raises(ConfigError, match="mode"):
        matrix_cells(cfg, "diagonal")


def test_cell_overlays_make_valid_experiments(repo, monkeypatch, tmp_path):
    monkeypatch.chdir(repo)
    cfg = load_config("config.yaml", overlays=["experiments/demo-cross.yaml"])
    cells = matrix_cells(cfg, "cross")
    assert set(cells) == {
        "demo-x-demo-ae-deconv",
        "demo-x-demo-ae-bilinear",
        "demo-x-demo-dcgan-face",
    }
    paths = write_cell_overlays(cells, tmp_path)
    for name, path in paths.items():
        cell = load_config("config.yaml", overlays=["experiments/demo-cross.yaml", str(path)])
        assert cell["experiment"]["name"] == name
        assert cell["experiment"]["train_generators"] == cells[name]
        assert cell["experiment"]["detectors"] == ["student-nokd"]


def test_kd_cells_train_their_own_teachers_unless_pinned(repo, monkeypatch, tmp_path):
    monkeypatch.chdir(repo)
    cfg = load_config("config.yaml")  # the demo's KD student, teachers trained on the cell's data
    cells = matrix_cells(cfg, "cross")
    paths = write_cell_overlays(cells, tmp_path)

    def teacher_dirs(*extra):
        plans = [
            load_checked("config.yaml", [*extra, str(p)], sources=False)[1] for p in paths.values()
        ]
        return [p.teacher_dir("vitgpt2") for p in plans]

    assert len(set(teacher_dirs())) == len(cells) == 3  # one teacher per cell, none replaced
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text("teachers: {vitgpt2: {train_generators: [demo/real, demo/ae-deconv]}}\n")
    assert len(set(teacher_dirs(str(pinned)))) == 1  # the same data: one shared teacher


def _metrics(cell_train):
    rows = []
    for gen in ("a", "b"):
        rows.append({"detector": "s", "perturbation": "none", "dataset": "d", "generator": gen, "is_real": False,
                     "in_distribution": gen in cell_train, "ap": 0.9 if gen in cell_train else 0.6, "auc": 0.5,
                     "n_real": 40, "n_fake": 100 if gen == "a" else 12,
                     "accuracy": 0.5, "fake_accuracy": 0.5})  # fmt: skip
    rows.append({**rows[0], "generator": "real", "is_real": True})
    rows.append({**rows[0], "generator": "all", "ap": 0.7})
    return pd.DataFrame(rows)


def test_collect_matrix_marks_in_distribution(tmp_path):
    cells = {"m-x-a": ["d/real", "d/a"], "m-x-b": ["d/real", "d/b"]}
    for name, train in cells.items():
        (tmp_path / name / "metrics").mkdir(parents=True)
        _metrics([t.split("/")[1] for t in train]).to_parquet(
            tmp_path / name / "metrics" / "metrics.parquet"
        )
    table = collect_matrix(cells, tmp_path)
    assert len(table) == 4 and set(table["train"]) == {"d/a", "d/b"}
    diag = table[table["in_distribution"]]
    assert (diag["ap"] == 0.9).all() and set(
        zip(diag["train"], diag["generator"], strict=True)
    ) == {
        ("d/a", "a"),
        ("d/b", "b"),
    }
    page = matrix_html(table, "t")
    assert "0.900*" in page and "0.600" in page and "0.600*" not in page
    # each test generator's counts head its column; b's 12 fakes are marked as too few
    assert "test images (real / fake)" in page and "40 / 100<" in page and "40 / 12 ⚠" in page
    with pytest.raises(FileNotFoundError, match="has not been run"):
        collect_matrix({"m-x-c": ["d/real", "d/c"]}, tmp_path)
