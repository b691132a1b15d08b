"""Preprocess: counts reconcile, bad files are quarantined with reasons, shards, resume."""

import pandas as pd
import pytest

from helpers import bomb_png, write_images
from sidflow.data import preprocess as pp
from sidflow.data.preprocess import PreprocessParams, part_files, preprocess_generator
from sidflow.io import read_json


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "raw"
    write_images(folder, 10, fmt="png")
    write_images(folder / "sub", 5, seed=1, fmt="jpg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    (folder / "trunc.png").write_bytes((folder / "img_0_0000.png").read_bytes()[:100])
    (folder / "bomb.png").write_bytes(bomb_png())
    return folder


@pytest.mark.parametrize("threads", [1, 2])
def test_reconcile_and_quarantine(raw, tmp_path, threads):
    out = tmp_path / "out"
    s = preprocess_generator(
        raw, out, PreprocessParams(image_size=16, shard_size=4), threads=threads
    )
    assert s["inputs"] == 19 == s["written"] + s["quarantined"]
    assert s["written"] == 15 and s["quarantined"] == 4
    assert s["quarantine_reasons"] == {"empty file": 1, "not an image": 1, "truncated or corrupt image data": 1,
                                       "decompression bomb": 1}  # fmt: skip
    q = pd.read_parquet(out / "quarantine.parquet")
    assert set(q["source_path"]) == {"empty.png", "text.jpg", "trunc.png", "bomb.png"}
    assert q["detail"].str.len().min() > 0
    parts = part_files(out)
    assert len(parts) == s["shards"] == 5  # ceil(19 / 4): shards bound rows per file
    rows = pd.concat([pd.read_parquet(p) for p in parts])
    assert len(rows) == 15 and rows["image_id"].str.len().eq(64).all()
    assert s["encodings"] == {"jpeg": 15} and set(rows["encoding"]) == {"jpeg"}
    assert set(rows["width"]) == {16} and rows["jpeg"].map(lambda b: b[:2] == b"\xff\xd8").all()
    assert read_json(out / "summary.json") == s
    assert not (tmp_path / "out.partial").exists()


def test_parallel_equals_serial(raw, tmp_path):
    a = preprocess_generator(
        raw, tmp_path / "a", PreprocessParams(image_size=16, shard_size=7), threads=1
    )
    b = preprocess_generator(
        raw, tmp_path / "b", PreprocessParams(image_size=16, shard_size=7), threads=2
    )
    assert a == b
    ra = pd.concat([pd.read_parquet(p) for p in part_files(tmp_path / "a")])
    rb = pd.concat([pd.read_parquet(p) for p in part_files(tmp_path / "b")])
    pd.testing.assert_frame_equal(ra.reset_index(drop=True), rb.reset_index(drop=True))


def test_interrupted_run_resumes_finished_shards(raw, tmp_path, monkeypatch):
    out = tmp_path / "out"
    params = PreprocessParams(image_size=16, shard_size=4)
    calls = []
    real = pp.process_one

    def crash_on_third_shard(args):
        calls.append(args[1])
        if len(calls) > 8:
            raise KeyboardInterrupt  # simulates a kill in shard 3
        return real(args)

    monkeypatch.setattr(pp, "process_one", crash_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        preprocess_generator(raw, out, params, threads=1)
    assert not out.exists() and len(list((tmp_path / "out.partial").glob("part-*.parquet"))) == 2
    calls.clear()
    monkeypatch.setattr(pp, "process_one", lambda args: (calls.append(args[1]), real(args))[1])
    s = preprocess_generator(raw, out, params, threads=1)
    assert len(calls) == 19 - 8  # only the unfinished shards were processed again
    assert s["written"] + s["quarantined"] == 19


def test_resume_redoes_a_shard_whose_file_was_replaced_in_place(raw, tmp_path, monkeypatch):
    """Adversarial row 10: a raw file replaced under the same name must not keep its shard."""
    import shutil

    out = tmp_path / "out"
    params = PreprocessParams(image_size=16, shard_size=4)
    real = pp.process_one
    calls = []

    def crash_after_two_shards(args):
        calls.append(args[1])
        if len(calls) > 8:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(pp, "process_one", crash_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        preprocess_generator(raw, out, params)
    first = sorted(pp.list_inputs(raw))[0]  # in shard 0, already written
    old_id = pd.read_parquet(tmp_path / "out.partial" / "part-00000.parquet")["image_id"].tolist()
    shutil.copy(raw / "img_0_0009.png", raw / first)  # same name, other content
    calls.clear()
    monkeypatch.setattr(pp, "process_one", lambda args: (calls.append(args[1]), real(args))[1])
    preprocess_generator(raw, out, params)
    assert first in calls and len(calls) == 19 - 4  # shard 0 redone, shard 1 reused
    rows = pd.concat([pd.read_parquet(p) for p in part_files(out)]).set_index("source_path")
    assert rows.loc[first, "image_id"] == rows.loc["img_0_0009.png", "image_id"]
    assert rows.loc[first, "image_id"] not in old_id


def test_changed_params_discard_stale_partial(raw, tmp_path):
    partial = tmp_path / "out.partial"
    partial.mkdir()
    (partial / "plan.json").write_text('{"key": "something else"}')
    (partial / "part-00000.parquet").write_bytes(b"stale")
    (partial / "quarantine-00000.parquet").write_bytes(b"stale")
    s = preprocess_generator(raw, tmp_path / "out", PreprocessParams(image_size=16, shard_size=100))
    assert s["written"] == 15


def test_missing_raw_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        preprocess_generator(tmp_path / "nowhere", tmp_path / "out", PreprocessParams())


def test_encode_modes_are_recorded_per_image(raw, tmp_path):
    # the sources are 48 px: at image_size 48 nothing changes, so their own bytes are kept
    s = preprocess_generator(
        raw, tmp_path / "o", PreprocessParams(image_size=48, encode="original")
    )
    assert (
        s["encodings"] == {"original-PNG": 10, "original-JPEG": 5}
        and s["params"]["encode"] == "original"
    )
    rows = pd.concat([pd.read_parquet(p) for p in part_files(tmp_path / "o")]).set_index(
        "source_path"
    )
    assert rows.loc["img_0_0000.png", "jpeg"] == (raw / "img_0_0000.png").read_bytes()
    s = preprocess_generator(raw, tmp_path / "p", PreprocessParams(image_size=16, encode="png"))
    assert s["encodings"] == {"png": 15}


def test_huge_and_special_files_are_quarantined_unread(raw, tmp_path, monkeypatch):
    """Adversarial row 7 (a 2 GB non-image, /dev/zero): refused by size or type, never read."""
    import os

    big = raw / "huge.png"
    with open(big, "wb") as fh:  # sparse: 3 GB on paper, nothing on disk
        fh.truncate(3 * 2**30)
    os.mkfifo(raw / "pipe.png")
    reads = []
    real_read = pp.Path.read_bytes

    def spy(self):
        reads.append(self.name)
        return real_read(self)

    monkeypatch.setattr(pp.Path, "read_bytes", spy)
    s = preprocess_generator(
        raw, tmp_path / "o", PreprocessParams(image_size=16, max_bytes=10 * 2**20)
    )
    assert (
        s["quarantine_reasons"]["file too large"] == 1
        and s["quarantine_reasons"]["special file"] == 1
    )
    assert "huge.png" not in reads and "pipe.png" not in reads
    q = pd.read_parquet(tmp_path / "o" / "quarantine.parquet").set_index("source_path")
    assert "3221225472 bytes > max_bytes 10485760" in q.loc["huge.png", "detail"]


def test_a_name_with_invalid_utf8_bytes_never_stops_a_run(raw, tmp_path):
    """Adversarial row 3: `bad\\xffname.png` crashed the plan key, the raw index and predict."""
    import os
    import shutil

    from sidflow.data.raw_index import build_index, write_index

    odd = os.fsdecode(b"bad\xffname.png")  # how Python holds the undecodable byte
    shutil.copy(raw / "img_0_0000.png", raw / odd)
    s = preprocess_generator(raw, tmp_path / "o", PreprocessParams(image_size=16))
    assert s["written"] == 16  # processed like any other image
    rows = pd.concat([pd.read_parquet(p) for p in part_files(tmp_path / "o")])
    assert "bad\\xffname.png" in set(rows["source_path"])  # the odd byte kept, as \xff
    index = build_index(raw)
    assert "bad\\xffname.png" in set(index["path"])
    assert (
        write_index(raw, tmp_path / "index.tsv")
        and "bad\\xffname.png" in (tmp_path / "index.tsv").read_text()
    )
