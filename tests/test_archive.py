"""Archive extraction refuses traversal, absolute paths and links; extracts by prefix."""

import io
import tarfile
import zipfile

import pytest

from sidflow.data.archive import UnsafeArchiveError, extract


def make_zip(path, members: dict[str, bytes], symlink: str | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    return path


def make_tar(path, members: dict[str, bytes], link: tuple[str, str, bytes] | None = None):
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type = link[2]
            info.linkname = link[1]
            tf.addfile(info)
    return path


def test_zip_extracts_prefix_only(tmp_path):
    z = make_zip(
        tmp_path / "a.zip",
        {"train/REAL/1.jpg": b"a", "train/FAKE/2.jpg": b"b", "train/REAL/sub/3.jpg": b"c"},
    )
    out = tmp_path / "out"
    assert extract(z, out, prefix="train/REAL") == 2
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "1.jpg",
        "sub/3.jpg",
    ]


def test_glob_prefix_keeps_full_paths(tmp_path):
    z = make_zip(
        tmp_path / "a.zip",
        {
            "progan/cat/1_fake/a.png": b"1",
            "progan/dog/1_fake/a.png": b"2",
            "progan/dog/0_real/a.png": b"3",
        },
    )
    out = tmp_path / "out"
    assert extract(z, out, prefix="progan/*/1_fake") == 2
    assert (out / "progan/cat/1_fake/a.png").read_bytes() == b"1"


@pytest.mark.parametrize(
    "name", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt", "C:/evil.txt"]
)
def test_zip_traversal_refused_and_nothing_written(tmp_path, name):
    z = make_zip(tmp_path / "bad.zip", {"ok/first.jpg": b"x", name: b"evil"})
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="bad.zip"):
        extract(z, out)
    assert not (tmp_path / "evil.txt").exists()
    assert not out.exists() or not any(out.rglob("*"))


def test_zip_symlink_refused(tmp_path):
    z = make_zip(tmp_path / "l.zip", {"a.jpg": b"x"}, symlink="link.jpg")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        extract(z, tmp_path / "out")


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_tar_links_refused(tmp_path, kind):
    t = make_tar(tmp_path / "l.tar", {"a.jpg": b"x"}, link=("b.jpg", "../../etc/passwd", kind))
    with pytest.raises(UnsafeArchiveError, match="link"):
        extract(t, tmp_path / "out")


def test_tar_traversal_refused(tmp_path):
    t = make_tar(tmp_path / "t.tar", {"../../evil": b"x"})
    with pytest.raises(UnsafeArchiveError, match="escapes"):
        extract(t, tmp_path / "out")


def test_missing_prefix_is_an_error(tmp_path):
    z = make_zip(tmp_path / "a.zip", {"x/1.jpg": b"a"})
    with pytest.raises(FileNotFoundError, match="no files under 'y'"):
        extract(z, tmp_path / "out", prefix="y")


def test_decompression_bomb_refused_with_the_numbers_before_writing(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("data/zeros.bin", b"\0" * (8 << 20))  # 8 MiB of zeros: a few KiB compressed
    size = bomb.stat().st_size
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=r"members declare 8,388,608 bytes from a [\d,]+-byte archive "
                                                 r"\(ratio [\d,]+\); the limits are .* ratio 100"):  # fmt: skip
        extract(bomb, dest)
    assert not dest.exists() or not any(dest.rglob("*"))  # refused before anything is written
    with pytest.raises(UnsafeArchiveError, match="the limits are 1,048,576 bytes"):
        extract(bomb, dest, max_bytes=1 << 20, max_ratio=1e9)
    assert extract(bomb, dest, max_ratio=(8 << 20) / size + 1) == 1  # genuine data: raise the limit
    assert (dest / "data/zeros.bin").stat().st_size == 8 << 20


def test_a_member_lying_about_its_size_is_stopped_while_writing(tmp_path, monkeypatch):
    from sidflow.data import archive as mod

    src = tmp_path / "a.tar"
    with tarfile.open(src, "w") as tf:
        data = b"x" * 4096
        info = tarfile.TarInfo("big.bin")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    real = mod._iter_tar

    def lying(archive):  # the header claims 10 bytes; the stream gives 4096
        for name, _, opener in real(archive):
            yield name, 10, opener

    monkeypatch.setattr(mod, "_iter_tar", lying)
    with pytest.raises(UnsafeArchiveError, match="extracting wrote 4,096 bytes"):
        extract(src, tmp_path / "out", max_bytes=1000)


def test_source_limits_come_from_the_dataset_config():
    from sidflow.data.sources import limits

    assert limits({"max_extract_gb": 2, "max_ratio": 5}) == {"max_bytes": 2 << 30, "max_ratio": 5.0}
    assert limits({}) == {}
