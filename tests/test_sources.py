"""Download step: local folder/archive, url with sha256, resume and retries (loopback server)."""

import hashlib
import http.server
import threading
import zipfile

import pytest

from helpers import write_images
from sidflow.data.sources import ChecksumError, download_url, fetch_generator

ROW = {"generator": "fake-a", "source_subdir": "train/FAKE"}


def make_archive(tmp_path):
    src = tmp_path / "src"
    write_images(src / "train" / "FAKE", 3)
    write_images(src / "train" / "REAL", 2, seed=1)
    z = tmp_path / "data.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(src.rglob("*.png")):
            zf.write(p, p.relative_to(src).as_posix())
    return src, z


def test_local_folder_and_zip_give_the_same_files(tmp_path):
    src, z = make_archive(tmp_path)
    a = fetch_generator("d", {"type": "local", "path": str(src)}, ROW, tmp_path / "a")
    b = fetch_generator("d", {"type": "local", "path": str(z)}, ROW, tmp_path / "b")
    assert a["files"] == b["files"] == 3
    names = lambda d: sorted(p.name for p in d.iterdir())  # noqa: E731
    assert names(tmp_path / "a") == names(tmp_path / "b")


def test_local_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.zip"):
        fetch_generator(
            "d", {"type": "local", "path": str(tmp_path / "nope.zip")}, ROW, tmp_path / "o"
        )


def test_unknown_source_type(tmp_path):
    with pytest.raises(ValueError, match="unknown source type"):
        fetch_generator("d", {"type": "ftp"}, ROW, tmp_path / "o")


class RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    fail_first = 0
    requests: list = []

    def do_GET(self):  # noqa: N802
        cls = type(self)
        cls.requests.append(self.headers.get("Range"))
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        body = cls.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    RangeHandler.requests = []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_url_source_downloads_checks_and_extracts(tmp_path, server):
    _, z = make_archive(tmp_path)
    RangeHandler.payload, RangeHandler.fail_first = z.read_bytes(), 0
    digest = hashlib.sha256(RangeHandler.payload).hexdigest()
    src = {"type": "url", "url": f"{server}/data.zip", "sha256": digest}
    s = fetch_generator("d", src, ROW, tmp_path / "raw", download_dir=tmp_path / "dl")
    assert s["files"] == 3
    (archive,) = (tmp_path / "dl" / "d").glob("*/data.zip")  # one folder per URL (+ sha256)
    assert archive.read_bytes() == RangeHandler.payload


def test_changed_url_does_not_reuse_the_old_archive(tmp_path, server):
    """The cached archive is keyed by URL (+ sha256 when given), not by its file name."""
    old_src, old_zip = make_archive(tmp_path / "old")
    new_src = tmp_path / "new" / "src"
    write_images(new_src / "train" / "FAKE", 5, seed=7)
    new_zip = tmp_path / "new" / "data.zip"
    with zipfile.ZipFile(new_zip, "w") as zf:
        for p in sorted(new_src.rglob("*.png")):
            zf.write(p, p.relative_to(new_src).as_posix())
    RangeHandler.fail_first = 0
    kw = {"download_dir": tmp_path / "dl"}
    RangeHandler.payload = old_zip.read_bytes()
    a = fetch_generator(
        "d", {"type": "url", "url": f"{server}/v1/data.zip"}, ROW, tmp_path / "a", **kw
    )
    RangeHandler.payload = new_zip.read_bytes()
    b = fetch_generator(
        "d", {"type": "url", "url": f"{server}/v2/data.zip"}, ROW, tmp_path / "b", **kw
    )
    assert (a["files"], b["files"]) == (3, 5)
    # the same URL is not downloaded again; a pinned sha256 gets its own entry
    n = len(RangeHandler.requests)
    fetch_generator("d", {"type": "url", "url": f"{server}/v2/data.zip"}, ROW, tmp_path / "c", **kw)
    assert len(RangeHandler.requests) == n
    digest = hashlib.sha256(RangeHandler.payload).hexdigest()
    src = {"type": "url", "url": f"{server}/v2/data.zip", "sha256": digest}
    assert fetch_generator("d", src, ROW, tmp_path / "e", **kw)["files"] == 5
    assert len(list((tmp_path / "dl" / "d").glob("*/data.zip"))) == 3


def test_url_resumes_partial_download_and_retries(tmp_path, server):
    RangeHandler.payload = bytes(range(256)) * 1000
    RangeHandler.fail_first = 2
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(RangeHandler.payload[:1000])
    download_url(
        f"{server}/f.bin", dest, hashlib.sha256(RangeHandler.payload).hexdigest(), backoff=0.01
    )
    assert dest.read_bytes() == RangeHandler.payload
    assert RangeHandler.requests[-1] == "bytes=1000-"  # resumed, not restarted
    assert len(RangeHandler.requests) == 3  # two failures, then success


def test_url_checksum_mismatch_is_an_error(tmp_path, server):
    RangeHandler.payload, RangeHandler.fail_first = b"abc", 0
    with pytest.raises(ChecksumError, match="does not match"):
        download_url(f"{server}/x", tmp_path / "x", "0" * 64)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()


def test_url_gives_up_after_retries(tmp_path, server):
    RangeHandler.payload, RangeHandler.fail_first = b"abc", 99
    with pytest.raises(ConnectionError, match="after 2 attempts"):
        download_url(f"{server}/x", tmp_path / "x", None, retries=2, backoff=0.01)


def test_cifake_zip_through_local_source(tmp_path, cifake_zip):
    """The real CIFAKE archive layout, through the same code path users take."""
    row = {"generator": "sd14", "source_subdir": "train/FAKE"}
    # extract a slice by copying a few members into a small zip of the same layout
    small = tmp_path / "cifake-small.zip"
    with zipfile.ZipFile(cifake_zip) as src, zipfile.ZipFile(small, "w") as dst:
        all_names = src.namelist()
        names = [n for n in all_names if n.startswith("train/REAL/")][:50] + [
            n for n in all_names if n.startswith("train/FAKE/")
        ][:70]
        for n in names:
            dst.writestr(n, src.read(n))
    fake = sum(n.startswith("train/FAKE/") and not n.endswith("/") for n in names)
    s = fetch_generator("cifake", {"type": "local", "path": str(small)}, row, tmp_path / "raw")
    assert s["files"] == fake == 70
