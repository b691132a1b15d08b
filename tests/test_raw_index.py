"""The raw-folder content index that lets Snakemake see edits inside data/raw/<d>/<g>/."""

import hashlib
import os

import pandas as pd
import pytest

from sidflow.data import raw_index
from sidflow.data.raw_index import build_index, refresh_indexes, write_index


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def raw(tmp_path):
    d = tmp_path / "raw"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "b.png").write_bytes(b"bb")
    (d / "a.png").write_bytes(b"a")
    (d / "sub" / "c.png").write_bytes(b"ccc")
    (d / "sub" / "deeper" / ".hidden").write_bytes(b"h")
    (d / ".snakemake_timestamp").write_bytes(b"")
    return d


def test_index_lists_every_file_sorted_with_size_and_digest(raw):
    idx = build_index(raw)
    assert list(idx.columns) == ["path", "size", "sha256"]
    assert idx["path"].tolist() == ["a.png", "b.png", "sub/c.png", "sub/deeper/.hidden"]
    assert idx["size"].tolist() == [1, 2, 3, 1]
    assert idx["sha256"].tolist() == [_sha(b"a"), _sha(b"bb"), _sha(b"ccc"), _sha(b"h")]


def test_stat_cache_hashes_only_new_or_changed_files(raw, tmp_path, monkeypatch):
    cache = tmp_path / "stat.parquet"
    build_index(raw, cache)
    hashed = []
    real = raw_index.sha256_file
    monkeypatch.setattr(raw_index, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    first = build_index(raw, cache)
    assert hashed == []  # nothing changed: stats only
    (raw / "b.png").write_bytes(b"BBB")
    (raw / "new.png").write_bytes(b"n")
    second = build_index(raw, cache)
    assert sorted(hashed) == ["b.png", "new.png"]
    assert len(second) == len(first) + 1
    assert second.set_index("path").loc["b.png", "sha256"] == _sha(b"BBB")
    assert len(pd.read_parquet(cache)) == len(second)


def test_write_index_rewrites_only_on_content_change(raw, tmp_path):
    index, cache = tmp_path / "idx" / "g.tsv", tmp_path / "stat.parquet"
    assert write_index(raw, index, cache) is True
    before = index.stat().st_mtime_ns
    for p in raw.rglob("*.png"):  # a touch changes times, not content
        os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    assert write_index(raw, index, cache) is False
    assert index.stat().st_mtime_ns == before
    (raw / "a.png").write_bytes(b"changed")
    assert write_index(raw, index, cache) is True
    assert _sha(b"changed") in index.read_text()


def test_symlinks_are_listed_not_followed(raw, tmp_path):
    (raw / "dangling.png").symlink_to(tmp_path / "missing.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"x")
    (raw / "linked-dir").symlink_to(outside, target_is_directory=True)
    idx = build_index(raw).set_index("path")
    assert "linked-dir/x.png" not in idx.index  # not descended
    assert idx.loc["dangling.png", "sha256"].startswith("symlink:")
    assert idx.loc["linked-dir", "sha256"].startswith("symlink:")


def test_refresh_skips_folders_without_an_index(raw, tmp_path):
    with_index = tmp_path / "index" / "d" / "g.tsv"
    write_index(raw, with_index)
    (raw / "a.png").write_bytes(b"edited")
    pairs = [(raw, with_index), (tmp_path / "not-downloaded", tmp_path / "index" / "d" / "h.tsv")]
    changed = refresh_indexes(pairs, tmp_path / "stat")
    assert changed == [str(with_index)]
    assert not (tmp_path / "index" / "d" / "h.tsv").exists()
    assert (tmp_path / "stat" / "d" / "g.parquet").exists()
    assert refresh_indexes(pairs, tmp_path / "stat") == []


def test_missing_raw_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_index(tmp_path / "nope")


def test_a_fifo_in_a_raw_folder_is_indexed_without_being_opened(tmp_path):
    import os

    from sidflow.data.raw_index import build_index

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.png").write_bytes(b"x")
    os.mkfifo(raw / "pipe.png")  # opening it for reading would block forever
    index = build_index(raw).set_index("path")
    assert index.loc["pipe.png", "sha256"] == "special:prw-r--r--" or index.loc[
        "pipe.png", "sha256"
    ].startswith("special:p")
    assert len(index.loc["a.png", "sha256"]) == 64


def test_indexes_are_left_alone_while_another_run_holds_the_lock(tmp_path, caplog):
    from sidflow.data.raw_index import lock_held

    locks = tmp_path / ".snakemake" / "locks"
    assert not lock_held(locks)  # no folder yet
    locks.mkdir(parents=True)
    assert not lock_held(locks)
    (locks / "0.input.lock").write_text("data/raw/demo/real\n")
    assert lock_held(locks) and "holds the lock" in caplog.text


def test_watch_modes_files_sees_in_place_edits_dirs_sees_added_removed_renamed(raw, tmp_path):
    """files: every file stat'ed; dirs: only folder mtimes (a file added, removed or renamed,
    in any sub-folder); auto: files below AUTO_FILES files, dirs above."""
    index = tmp_path / "index" / "d" / "g.tsv"
    write_index(raw, index)
    pairs, stat = [(raw, index)], tmp_path / "stat"
    assert refresh_indexes(pairs, stat, "dirs") == []  # first check: a full scan, no change
    signature = stat / "d" / "g.dirs.json"
    assert set(raw_index.read_json(signature)["dirs"]) == {"", "sub", "sub/deeper"}

    def rewrite_in_place(path, data):  # same name, same folder: no folder mtime changes
        folder_times = {p: p.stat().st_mtime_ns for p in (raw, raw / "sub")}
        path.write_bytes(data)
        assert all(p.stat().st_mtime_ns == t for p, t in folder_times.items())

    rewrite_in_place(raw / "sub" / "c.png", b"edited")
    assert refresh_indexes(pairs, stat, "dirs") == []  # dirs cannot see it (documented)
    assert refresh_indexes(pairs, stat, "auto") == [str(index)]  # small folder: per file
    assert _sha(b"edited") in index.read_text()
    for change in (
        lambda: (raw / "sub" / "deeper" / "new.png").write_bytes(b"n"),  # added, two levels down
        lambda: (raw / "sub" / "c.png").rename(raw / "sub" / "c2.png"),  # renamed
        lambda: (raw / "b.png").unlink(),  # removed
        lambda: (raw / "sub" / "fresh").mkdir(),  # a new (empty) folder: no new file, no change
    ):
        change()
        got = refresh_indexes(pairs, stat, "dirs")
        assert got == ([] if "mkdir" in str(change.__code__.co_names) else [str(index)])
    assert index.read_text().count("\n") == 1 + 4  # header + a, c2, .hidden, new
    # auto treats a folder of AUTO_FILES files or more like dirs
    raw_index.write_json(
        signature, {**raw_index.read_json(signature), "files": raw_index.AUTO_FILES}
    )
    rewrite_in_place(raw / "a.png", b"A2")
    assert refresh_indexes(pairs, stat, True) == []
    assert refresh_indexes(pairs, stat, "files") == [str(index)]
    with pytest.raises(ValueError, match="watch_raw: 'sometimes'"):
        refresh_indexes(pairs, stat, "sometimes")
