"""``sidflow predict`` and the student folder it reads: integrity hashes, non-finite scores,
output files written atomically in the format their suffix names, arguments checked first."""

import csv
import json
import logging
import shutil
import struct

import pytest

from sidflow.cli import main
from sidflow.models.student import load_student


@pytest.fixture(scope="module")
def trained_student(tiny_student):
    """The session's tiny student (1 epoch, no KD); tests copy it (``student`` fixture)."""
    return tiny_student


@pytest.fixture
def student(trained_student, tmp_path):
    return shutil.copytree(trained_student, tmp_path / "student")


@pytest.fixture
def images(tiny_data, tmp_path):
    """Five images of each generator: ``tmp_path/images/{real,fake}/``."""
    for gen in ("real", "fake"):
        dest = tmp_path / "images" / gen
        dest.mkdir(parents=True)
        for p in sorted((tiny_data["raw"] / gen).iterdir())[:5]:
            shutil.copy(p, dest / p.name)
    return tmp_path / "images"


def _corrupt_weights(model_dir):
    """Overwrite every tensor's bytes with 0xFF (float NaN), keeping the safetensors header."""
    path = model_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    data[start:] = b"\xff" * (len(data) - start)
    path.write_bytes(bytes(data))


def _strip_hashes(model_dir):
    """Make the folder look like one written before the integrity hashes existed."""
    card = json.loads((model_dir / "student.json").read_text())
    card.pop("weights_sha256", None)
    card.pop("config_sha256", None)
    (model_dir / "student.json").write_text(json.dumps(card))


def _predict(model, *args):
    return main(["predict", "--model", str(model), "--quiet", *map(str, args)])


# -- row 1: overwritten weights / non-finite scores ----------------------------------------------
def test_overwritten_weights_are_refused_naming_the_folder(student, images, tmp_path, capsys):
    _corrupt_weights(student)
    assert _predict(student, images, "--output", tmp_path / "p.csv") == 2
    err = capsys.readouterr().err
    assert str(student) in err and "weights_sha256" in err and "model.safetensors" in err
    assert not (tmp_path / "p.csv").exists()


def test_non_finite_score_is_an_error_naming_the_model(student, images, tmp_path, capsys):
    _corrupt_weights(student)
    _strip_hashes(student)  # an old folder: no hashes to catch it on load
    (tmp_path / "p.csv").write_text("old results\n")
    assert _predict(student, images, "--output", tmp_path / "p.csv") == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and str(student) in err
    assert (tmp_path / "p.csv").read_text() == "old results\n"  # the old output is untouched


# -- row 2: student.json edited -----------------------------------------------------------------
@pytest.mark.parametrize(
    "edit", [("preprocess", "jpeg_quality", 50), ("student", "image_size", 64),
             ("preprocess", "image_size", 64)],
)  # fmt: skip
def test_edited_student_json_is_refused(student, edit):
    card = json.loads((student / "student.json").read_text())
    block, key, value = edit
    card[block][key] = value
    (student / "student.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="config_sha256") as err:
        load_student(student)
    assert str(student) in str(err.value)


def test_edited_threshold_is_refused(student):
    card = json.loads((student / "student.json").read_text())
    card["threshold"] = 0.999
    (student / "student.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="config_sha256"):
        load_student(student)


def test_card_records_both_hashes_and_old_folders_load_with_a_warning(student, caplog):
    from sidflow.io import sha256_file

    card = json.loads((student / "student.json").read_text())
    assert card["weights_sha256"] == sha256_file(student / "model.safetensors")
    assert len(card["config_sha256"]) == 64
    load_student(student)  # intact: loads silently
    _strip_hashes(student)
    with caplog.at_level(logging.WARNING):
        _, meta = load_student(student)
    assert meta["threshold"] == card["threshold"]
    assert "no integrity hashes" in caplog.text and str(student) in caplog.text


# -- row 4: wrong --model with an existing --output ---------------------------------------------
def test_wrong_model_leaves_an_existing_output_untouched(images, tmp_path, capsys):
    out = tmp_path / "p.csv"
    out.write_text("path,p_fake\nkeep.png,0.1\n")
    assert _predict(tmp_path / "no-such-model", images, "--output", out) == 2
    assert out.read_text() == "path,p_fake\nkeep.png,0.1\n"
    assert "no-such-model" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".p.csv")] == []


# -- row 5: a bad path among several arguments --------------------------------------------------
def test_bad_argument_is_reported_before_any_work(student, images, tmp_path, capsys):
    out = tmp_path / "p.json"
    args = [images / "real", tmp_path / "missing.png", images / "fake", tmp_path / "nope*.jpg"]
    argv = ["predict", "--model", str(student), *map(str, args), "--output", str(out),
            "--batch-size", "2"]  # fmt: skip
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no image was classified
    assert "missing.png" in captured.err and "nope*.jpg" in captured.err
    assert not out.exists()


def test_interrupted_run_keeps_the_rows_so_far(student, images, tmp_path, monkeypatch):
    import sidflow.predict as predict_mod

    real = predict_mod.normalize_image
    calls = []

    def interrupt_on_the_sixth(*a, **k):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(predict_mod, "normalize_image", interrupt_on_the_sixth)
    out = tmp_path / "p.json"
    out.write_text("[]")
    with pytest.raises(KeyboardInterrupt):
        _predict(student, images, "--output", out, "--batch-size", "1")
    assert out.read_text() == "[]"  # not replaced by a partial run
    partial = json.loads((tmp_path / "p.json.partial").read_text())
    assert len(partial) == 5 and all(r["verdict"] in ("real", "fake") for r in partial)


# -- row 9: output format and folder ------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "extra", "kind"),
    [("p.tsv", [], "tsv"), ("p.CSV", [], "csv"), ("p.Json", [], "json"),
     ("p.out", ["--format", "tsv"], "tsv"), ("p.csv", ["--format", "json"], "json")],
)  # fmt: skip
def test_output_format_follows_the_suffix_or_format(student, images, tmp_path, name, extra, kind):
    out = tmp_path / name
    assert _predict(student, images, "--output", out, *extra) == 0
    text = out.read_text()
    if kind == "json":
        rows = json.loads(text)
    else:
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if kind == "tsv" else ","))
    assert len(rows) == 10 and set(rows[0]) == {"path", "p_fake", "verdict", "threshold", "model",
                                                "reason", "attribution", "attribution_p"}  # fmt: skip
    # one schema for every model: a student without an attribution head leaves them empty
    assert all(r["attribution"] in (None, "") and r["attribution_p"] in (None, "") for r in rows)


@pytest.mark.parametrize(("target", "needle"), [("folder", "is a folder"),
                                                ("p.txt", "--format"),
                                                ("missing/p.csv", "does not exist")])  # fmt: skip
def test_bad_output_is_refused_before_any_work(student, images, tmp_path, capsys, target, needle):
    (tmp_path / "folder").mkdir()
    assert main(["predict", "--model", str(student), str(images), "--output",
                 str(tmp_path / target)]) == 2  # fmt: skip
    captured = capsys.readouterr()
    assert captured.out == "" and needle in captured.err and target in captured.err
    assert list((tmp_path / "folder").iterdir()) == []


# -- rows 6 and 7: every input found is a row; special and huge files are not read -------------
def test_every_entry_of_a_folder_is_a_row(student, images, tmp_path):
    import os

    import pandas as pd

    odd = images / "odd"
    odd.mkdir()
    shutil.copy(next((images / "real").iterdir()), odd / "photo.jfif")  # an image, odd suffix
    shutil.copy(next((images / "fake").iterdir()), odd / "no_suffix")
    (odd / "dangling.png").symlink_to(tmp_path / "gone.png")
    (odd / "loop").symlink_to(odd / "loop")
    os.mkfifo(odd / "pipe.png")  # reading it would hang
    with open(odd / "huge.png", "wb") as fh:
        fh.truncate(3 * 2**30)  # sparse 3 GB: refused by size, never read
    locked = odd / "locked"
    locked.mkdir()
    (locked / "inside.png").write_bytes(b"x")
    locked.chmod(0)
    try:
        out = tmp_path / "p.csv"
        assert _predict(student, images, "--output", out) == 0
    finally:
        locked.chmod(0o755)
    table = pd.read_csv(out)
    rows = table.set_index(table["path"].map(lambda p: os.path.relpath(p, images)))
    # 10 images + jfif, suffix-less, dangling link, loop, FIFO, huge file, the locked folder
    # (or, for root who can read it, the file inside it)
    assert len(rows) == 17 and rows.index.is_unique
    assert rows.loc["odd/photo.jfif", "verdict"] in ("real", "fake")
    assert rows.loc["odd/no_suffix", "verdict"] in ("real", "fake")
    for name, reason in (("odd/dangling.png", "unreadable"), ("odd/loop", "unreadable"),
                         ("odd/pipe.png", "special file"), ("odd/huge.png", "file too large")):  # fmt: skip
        assert rows.loc[name, "verdict"] == "quarantined" and reason in rows.loc[name, "reason"], (
            name
        )
    if os.geteuid() != 0:  # root reads anything: the locked folder is only locked for others
        assert rows.loc["odd/locked", "verdict"] == "quarantined"


def test_a_name_with_invalid_utf8_bytes_is_a_row(student, images, tmp_path):
    import os

    import pandas as pd

    shutil.copy(next((images / "real").iterdir()), images / os.fsdecode(b"bad\xffname.png"))
    out = tmp_path / "p.csv"
    assert _predict(student, images, "--output", out) == 0
    rows = pd.read_csv(out)
    assert len(rows) == 11 and rows["path"].str.endswith("bad\\xffname.png").sum() == 1
    assert (
        rows[rows["path"].str.endswith("bad\\xffname.png")]["verdict"].isin(["real", "fake"]).all()
    )
