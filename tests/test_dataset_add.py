"""``sidflow dataset add``: layout recognition (sidflow.data.layout), the sheet rows and overlay it
writes (sidflow.data.dataset_add) and the command. Every layout is built in ``tmp_path`` from a
few 8x8 PNGs; the written overlay is checked with ``load_config`` against the written sheet.

    python -m pytest -q tests/test_dataset_add.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from sidflow.checks import load_checked
from sidflow.config import load_config, load_sheet
from sidflow.data.dataset_add import DatasetAddError, add_dataset, check_dataset_name
from sidflow.data.layout import LayoutError, inspect_dataset, normalise_name


def pngs(folder: Path, n: int, prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        out.append(folder / f"{prefix}{i}.png")
        Image.new("RGB", (8, 8), (i * 20 % 256, 40, 90)).save(out[-1])
    return out


def table(layout) -> dict[str, tuple]:
    """generator -> (label, source_subdir, images, pair)."""
    return {g.name: (g.label, g.source_subdir, g.images, g.pair) for g in layout.generators}


# -- layouts -----------------------------------------------------------------------------------
def test_generator_real_fake_folders_pair_each_fake_with_its_reals(tmp_path):
    pngs(tmp_path / "sd14" / "real", 3)
    pngs(tmp_path / "sd14" / "fake", 2)
    pngs(tmp_path / "GLIDE" / "real", 1)
    pngs(tmp_path / "GLIDE" / "fake", 4)
    lay = inspect_dataset(tmp_path)
    assert lay.kind == "<generator>/{real,fake}"
    assert table(lay) == {
        "glide-real": ("real", "GLIDE/real", 1, ""),
        "glide": ("fake", "GLIDE/fake", 4, "glide-real"),
        "sd14-real": ("real", "sd14/real", 3, ""),
        "sd14": ("fake", "sd14/fake", 2, "sd14-real"),
    }
    assert lay.label_counts() == {"real": 4, "fake": 6}
    assert any("'GLIDE' is named 'glide'" in n for n in lay.notes)


def test_wang2020_flat(tmp_path):
    pngs(tmp_path / "0_real", 3)
    pngs(tmp_path / "1_fake", 5)
    lay = inspect_dataset(tmp_path)
    assert lay.kind == "Wang2020/CNNDetection {0_real,1_fake}"
    assert table(lay) == {"real": ("real", "0_real", 3, ""), "fake": ("fake", "1_fake", 5, "")}


def test_wang2020_per_generator_and_object_class(tmp_path):
    for cls, n in (("car", 2), ("cat", 3)):
        pngs(tmp_path / "progan" / cls / "0_real", n)
        pngs(tmp_path / "progan" / cls / "1_fake", n + 1)
    pngs(tmp_path / "biggan" / "0_real", 2)
    pngs(tmp_path / "biggan" / "1_fake", 2)
    lay = inspect_dataset(tmp_path)
    assert lay.kind.startswith("Wang2020/CNNDetection {0_real,1_fake} per generator")
    assert table(lay) == {
        "biggan-real": ("real", "biggan/0_real", 2, ""),
        "biggan": ("fake", "biggan/1_fake", 2, "biggan-real"),
        "progan-real": ("real", "progan/*/0_real", 5, ""),
        "progan": ("fake", "progan/*/1_fake", 7, "progan-real"),
    }


@pytest.mark.parametrize("splits", [(), ("train", "test")])
@pytest.mark.parametrize(("real", "fake"), [("REAL", "FAKE"), ("real", "Fake")])
def test_cifake_real_fake_any_case_with_or_without_splits(tmp_path, splits, real, fake):
    for split in splits or ("",):
        pngs(tmp_path / split / real, 2)
        pngs(tmp_path / split / fake, 3)
    lay = inspect_dataset(tmp_path)
    k = max(len(splits), 1)
    prefix = "*/" if splits else ""
    assert lay.kind == "CIFAKE-style {REAL,FAKE}"
    assert table(lay) == {"real": ("real", prefix + real, 2 * k, ""),
                          "fake": ("fake", prefix + fake, 3 * k, "")}  # fmt: skip
    assert any("test, train are merged" in n for n in lay.notes) == bool(splits)


def test_genimage_pairs_each_generator_with_its_nature(tmp_path):
    for split in ("train", "val"):
        pngs(tmp_path / "Midjourney" / split / "ai", 2)
        pngs(tmp_path / "Midjourney" / split / "nature", 1)
    pngs(tmp_path / "stable_diffusion_v_1_4" / "train" / "ai", 3)
    pngs(tmp_path / "stable_diffusion_v_1_4" / "train" / "nature", 3)
    lay = inspect_dataset(tmp_path)
    assert lay.kind == "GenImage <generator>/<split>/{ai,nature}"
    assert table(lay) == {
        "midjourney-real": ("real", "Midjourney/*/nature", 2, ""),
        "midjourney": ("fake", "Midjourney/*/ai", 4, "midjourney-real"),
        "stable_diffusion_v_1_4-real": ("real", "stable_diffusion_v_1_4/train/nature", 3, ""),
        "stable_diffusion_v_1_4": ("fake", "stable_diffusion_v_1_4/train/ai", 3, "stable_diffusion_v_1_4-real"),
    }  # fmt: skip


def _records(tmp_path: Path) -> list[dict]:
    rows = []
    for gen, label, n in (("natural", "real", 3), ("Stable Diffusion 1.4", "fake", 2),
                          ("Big GAN", "fake", 2), ("biggan", "1", 1)):  # fmt: skip
        for p in pngs(tmp_path / "images", n, prefix=normalise_name(gen) + f"-{label}-"):
            rows.append({"path": f"images/{p.name}", "label": label, "generator": gen,
                         "object_class": "cat"})  # fmt: skip
    return rows


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_records_file_gives_metadata_driven_generators(tmp_path, fmt):
    from sidflow.data.sources import fetch_generator

    rows = _records(tmp_path)
    if fmt == "json":
        (tmp_path / "labels.json").write_text(json.dumps(rows))
    else:
        lines = ["path,label,generator,object_class"]
        lines += [f"{r['path']},{r['label']},{r['generator']},{r['object_class']}" for r in rows]
        (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    lay = inspect_dataset(tmp_path)
    assert lay.kind == f"records (labels.{fmt})"
    # "Big GAN" and "biggan" are one generator (the metadata source's canonical spelling)
    assert table(lay) == {"big-gan": ("fake", "biggan", 3, ""), "natural": ("real", "natural", 3, ""),
                          "stable-diffusion-1.4": ("fake", "sd1.4", 2, "")}  # fmt: skip
    assert lay.metadata == {"files": [f"labels.{fmt}"], "image": "path", "group": "generator",
                            "canonical": True}  # fmt: skip
    assert any("object_class column not used" in n for n in lay.notes)
    # the local source's metadata option builds each generator's folder from the records
    source = {"type": "local", "path": str(tmp_path), "metadata": lay.metadata}
    got = fetch_generator("mine", source, {"generator": "big-gan", "source_subdir": "biggan"},
                          tmp_path / "raw" / "big-gan")  # fmt: skip
    names = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "raw" / "big-gan").iterdir())
    assert got["files"] == 3 and names == [
        "big-gan-fake-0.png",
        "big-gan-fake-1.png",
        "biggan-1-0.png",
    ]


def test_records_with_missing_images_or_mixed_labels_are_refused(tmp_path):
    pngs(tmp_path, 2)
    (tmp_path / "r.csv").write_text(
        "path,label,generator\nimg0.png,real,a\ngone.png,fake,b\nimg1.png,maybe,b\n"
    )
    with pytest.raises(LayoutError) as err:
        inspect_dataset(tmp_path)
    assert "2 record(s)" in str(err.value) and "'gone.png'" in str(err.value)
    assert "label 'maybe'" in str(err.value)
    (tmp_path / "r.csv").write_text("path,label,generator\nimg0.png,real,a\nimg1.png,fake,a\n")
    with pytest.raises(LayoutError, match="'a' has both real and fake"):
        inspect_dataset(tmp_path)


@pytest.mark.parametrize(
    ("folders", "needles"),
    [
        ({"a/real": 1, "a/fake": 1, "b/0_real": 1, "b/1_fake": 1}, ["a/real", "b/0_real", "more than one convention"]),
        ({"real": 1, "fake": 1, "extras": 2, "misc/deep": 1}, ["cannot place", "extras", "misc/deep"]),
        ({"photos": 2, "renders": 2}, ["unknown layout", "photos, renders"]),
        ({"real": 2}, ["needs real and fake"]),
        ({"g/a/real": 1, "g/real": 1, "g/fake": 1}, ["differ in depth", "g/a/real", "g/real"]),
    ],
)  # fmt: skip
def test_ambiguous_or_unknown_layouts_are_refused_naming_the_folders(tmp_path, folders, needles):
    for folder, n in folders.items():
        pngs(tmp_path / folder, n)
    with pytest.raises(LayoutError) as err:
        inspect_dataset(tmp_path)
    assert isinstance(err.value, ValueError)
    for needle in needles:
        assert needle in str(err.value)


def test_records_beside_label_folders_decide_only_when_they_list_every_image(tmp_path):
    pngs(tmp_path / "real", 1)
    pngs(tmp_path / "fake", 2)
    lines = ["path,label,generator", "real/img0.png,real,coco", "fake/img0.png,fake,sd 1.5"]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(LayoutError) as err:
        inspect_dataset(tmp_path)
    assert (
        "record files (labels.csv) and label folders with images the records do not list: fake;"
        in str(err.value)
    )
    (tmp_path / "labels.csv").write_text("\n".join([*lines, "fake/img1.png,fake,SD_1.5"]) + "\n")
    lay = inspect_dataset(tmp_path)
    assert table(lay) == {"coco": ("real", "coco", 1, ""), "sd-1.5": ("fake", "sd1.5", 2, "")}
    assert any("label folders fake, real ignored" in n for n in lay.notes)


def test_unreadable_files_are_counted_and_verify_opens_images(tmp_path):
    pngs(tmp_path / "real", 2)
    pngs(tmp_path / "fake", 2)
    (tmp_path / "real" / "notes.txt").write_text("hi")
    (tmp_path / "fake" / "empty.png").write_bytes(b"")
    (tmp_path / "fake" / "broken.png").write_bytes(b"not a png at all")
    lay = inspect_dataset(tmp_path)
    assert lay.label_counts() == {"real": 2, "fake": 3}  # broken.png passes the cheap check
    assert lay.unreadable_counts() == {"empty file": 1, "not an image (suffix)": 1}
    assert {u.path for u in lay.unreadable} == {"real/notes.txt", "fake/empty.png"}
    lay = inspect_dataset(tmp_path, verify=True)
    assert lay.label_counts() == {"real": 2, "fake": 2}
    assert [u.path for u in lay.unreadable if u.reason.startswith("cannot be opened")] == [
        "fake/broken.png"
    ]


def test_names_are_checked_and_normalised():
    assert normalise_name("Stable Diffusion (XL) 1.0") == "stable-diffusion-xl-1.0"
    assert normalise_name("_ADM_") == "adm"
    for bad in ("../x", "a/b", "Bad", "a..b", "-x", ""):
        with pytest.raises(DatasetAddError):
            check_dataset_name(bad)
    assert check_dataset_name("my-set.v2") == "my-set.v2"


# -- writing the sheet rows and the overlay ----------------------------------------------------
@pytest.fixture
def in_repo(repo, monkeypatch):
    monkeypatch.chdir(repo)  # load_config reads workflow/schemas and config.yaml from here
    return repo


def _genimage(root: Path) -> Path:
    for gen in ("ADM", "glide"):
        pngs(root / gen / "train" / "ai", 2)
        pngs(root / gen / "train" / "nature", 2)
    return root


def test_add_writes_rows_and_an_overlay_load_config_accepts(in_repo, tmp_path):
    data = _genimage(tmp_path / "mydata")
    sheet, out = tmp_path / "generators.tsv", tmp_path / "exp"
    res = add_dataset("mine", str(data), train=["adm"], sheet=sheet, overlay_dir=out)
    assert res.written and res.overlay_path == out / "mine.yaml"
    rows = load_sheet(sheet)  # schema-checked, pairs checked
    assert rows[["generator", "label", "source_subdir", "pair"]].values.tolist() == [
        ["adm-real", "real", "ADM/train/nature", ""], ["adm", "fake", "ADM/train/ai", "adm-real"],
        ["glide-real", "real", "glide/train/nature", ""], ["glide", "fake", "glide/train/ai", "glide-real"],
    ]  # fmt: skip
    assert set(rows["dataset"]) == {"mine"}
    overlay = yaml.safe_load(res.overlay_path.read_text())
    assert overlay["use_datasets"] == ["mine"] and overlay["generators_sheet"] == sheet.as_posix()
    assert overlay["datasets"]["mine"]["source"] == {"type": "local", "path": str(data)}
    exp = overlay["experiment"]
    assert exp["train_generators"] == ["mine/adm-real", "mine/adm"]  # the pair came along
    assert (exp["test_generators"], exp["teachers"], exp["perturbations"]) == ("all", [], [])
    assert exp["detectors"] == ["student-nokd"] and exp["students"]["student-nokd"]["alpha"] == 0.0
    assert overlay["probe"] == {"enabled": False}
    cfg, plan = load_checked("config.yaml", overlays=[str(res.overlay_path)])
    assert plan.detectors_of("student", "rine", "explainer") == ["student-nokd"]
    assert not cfg["explainer"]["enabled"]  # not selected: its step is not planned
    assert plan.real_pairs() == {"mine/adm": "mine/adm-real", "mine/glide": "mine/glide-real"}
    assert plan.test_keys() == ["mine/adm-real", "mine/adm", "mine/glide-real", "mine/glide"]
    assert any("added the real set(s) adm-real" in n for n in res.notes)


def test_add_kfold_overlay_plans_a_kfold_run_the_checks_accept(in_repo, tmp_path):
    data = _genimage(tmp_path / "mydata")
    sheet, out = tmp_path / "generators.tsv", tmp_path / "exp"
    res = add_dataset("mine", str(data), sheet=sheet, overlay_dir=out, kfold=4)
    overlay = yaml.safe_load(res.overlay_path.read_text())
    assert overlay["splits"] == {"mode": "kfold", "k": 4}
    assert (
        overlay["gradcam"] == {"enabled": False}
        and overlay["experiment"]["shortcut_audit"] is False
    )
    cfg, plan = load_checked("config.yaml", overlays=[str(res.overlay_path)])  # check_kfold passes
    assert cfg["splits"]["mode"] == "kfold" and plan.detectors_of("student") == ["student-nokd"]
    with pytest.raises(DatasetAddError, match="--kfold 2: k-fold needs 3 to 20 folds"):
        add_dataset("mine2", str(data), sheet=sheet, overlay_dir=out, kfold=2)


def test_add_records_layout_puts_the_metadata_option_in_the_overlay(in_repo, tmp_path):
    data = tmp_path / "recs"
    (data).mkdir()
    rows = _records(data)
    (data / "labels.json").write_text(json.dumps(rows))
    sheet = tmp_path / "generators.tsv"
    res = add_dataset("recs", str(data), sheet=sheet, overlay_dir=tmp_path)
    cfg = load_config("config.yaml", overlays=[str(res.overlay_path)])
    source = cfg["datasets"]["recs"]["source"]
    assert source["metadata"] == {"files": ["labels.json"], "image": "path", "group": "generator",
                                  "canonical": True}  # fmt: skip
    assert cfg["experiment"]["train_generators"] == [
        "recs/big-gan",
        "recs/natural",
        "recs/stable-diffusion-1.4",
    ]
    assert load_sheet(sheet)["source_subdir"].tolist() == ["biggan", "natural", "sd1.4"]


def test_force_replaces_only_the_datasets_rows(in_repo, tmp_path):
    sheet = tmp_path / "generators.tsv"
    shutil.copyfile(in_repo / "config" / "generators.tsv", sheet)
    before = sheet.read_text().splitlines()
    data = tmp_path / "d"
    pngs(data / "0_real", 2)
    pngs(data / "1_fake", 2)
    add_dataset("mine", str(data), sheet=sheet, overlay_dir=tmp_path)
    after = sheet.read_text().splitlines()
    assert after[: len(before)] == before and len(after) == len(before) + 2
    with pytest.raises(DatasetAddError, match="exists; --force"):
        add_dataset("mine", str(data), sheet=sheet, overlay_dir=tmp_path)
    (tmp_path / "mine.yaml").unlink()
    with pytest.raises(DatasetAddError, match="already has 2 rows of dataset 'mine'; --force"):
        add_dataset("mine", str(data), sheet=sheet, overlay_dir=tmp_path)
    shutil.rmtree(data / "1_fake")
    pngs(data / "sd" / "1_fake", 3)
    pngs(data / "sd" / "0_real", 1)
    res = add_dataset("mine", str(data), sheet=sheet, overlay_dir=tmp_path, force=True)
    final = sheet.read_text().splitlines()
    assert final[: len(before)] == before  # other datasets' lines untouched, byte for byte
    mine = [line.split("\t") for line in final[len(before) :]]
    assert [(r[1], r[2], r[5], r[7]) for r in mine] == [
        ("real", "real", "0_real", ""), ("sd-real", "real", "sd/0_real", ""), ("sd", "fake", "sd/1_fake", "sd-real")
    ]  # fmt: skip
    assert any("replaced the 2 old rows" in n for n in res.notes)
    load_config("config.yaml", overlays=[str(res.overlay_path)])


def test_add_refuses_catalogue_names_bad_paths_and_unknown_train(in_repo, tmp_path):
    data = _genimage(tmp_path / "d")
    kw = {"sheet": tmp_path / "g.tsv", "overlay_dir": tmp_path}
    with pytest.raises(DatasetAddError, match="catalogue"):
        add_dataset("cifake", str(data), **kw)
    with pytest.raises(DatasetAddError, match="--train 'sd14' is not a generator of mine"):
        add_dataset("mine", str(data), train=["sd14"], **kw)
    with pytest.raises(DatasetAddError, match="at least one fake"):
        add_dataset("mine", str(data), train=["adm-real"], **kw)
    spaced = tmp_path / "my data"
    shutil.copytree(data, spaced)
    with pytest.raises(DatasetAddError, match="rename the folder or link it"):
        add_dataset("mine", str(spaced), **kw)
    assert not (tmp_path / "g.tsv").exists() and not (tmp_path / "mine.yaml").exists()


# -- the command -------------------------------------------------------------------------------
def test_cli_dataset_add_prints_summary_and_next_commands(in_repo, tmp_path, capsys):
    from sidflow.cli import main

    data = tmp_path / "d"
    pngs(data / "train" / "REAL", 3)
    pngs(data / "train" / "FAKE", 2)
    (data / "train" / "FAKE" / "x.txt").write_text("?")
    sheet = tmp_path / "g.tsv"
    args = [
        "dataset",
        "add",
        "mine",
        str(data),
        "--sheet",
        str(sheet),
        "--overlay-dir",
        str(tmp_path),
    ]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and not sheet.exists() and not (tmp_path / "mine.yaml").exists()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "dataset mine: CIFAKE-style {REAL,FAKE}" in out
    assert "images: 3 real, 2 fake; unreadable files: 1 (1 not an image (suffix))" in out
    assert "train/FAKE/x.txt: not an image (suffix)" in out
    assert "pairs: none" in out and "train on: mine/real, mine/fake" in out
    overlay = tmp_path / "mine.yaml"
    assert f"sidflow validate-config --configfile {overlay}" in out
    assert f"snakemake --profile profiles/local --configfile {overlay}" in out
    assert load_sheet(sheet)["generator"].tolist() == ["real", "fake"]
    assert main(args) == 2  # refused without --force
    assert "--force" in capsys.readouterr().err
    assert main(["dataset", "add", "../x", str(data), "--sheet", str(sheet)]) == 2
    assert "dataset name '../x'" in capsys.readouterr().err
    assert main(["validate-config", "--configfile", str(overlay)]) == 0


def test_folder_names_outside_the_sheet_pattern_become_globs_the_download_step_reads(tmp_path):
    from sidflow.data.sources import fetch_generator

    pngs(tmp_path / "data" / "My Gen" / "real", 2)
    pngs(tmp_path / "data" / "My Gen" / "fake", 3)
    lay = inspect_dataset(tmp_path / "data")
    assert table(lay) == {"my-gen-real": ("real", "My?Gen/real", 2, ""),
                          "my-gen": ("fake", "My?Gen/fake", 3, "my-gen-real")}  # fmt: skip
    source = {"type": "local", "path": str(tmp_path / "data")}
    got = fetch_generator("x", source, {"generator": "my-gen", "source_subdir": "My?Gen/fake"},
                          tmp_path / "raw")  # fmt: skip
    assert got["files"] == 3 and len(list((tmp_path / "raw").rglob("*.png"))) == 3
