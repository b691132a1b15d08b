"""Download step: bring one generator subset of a dataset to ``data/raw/<dataset>/<generator>/``.

Sources are pluggable (:data:`SOURCES`):

* ``builtin-demo``: the embedded demo built from what installed packages ship
  (:mod:`sidflow.data.demo`), nothing fetched.
* ``local``: a folder or a zip/tar archive already on disk; with ``metadata``, generator
  folders are made from JSON/CSV records (:mod:`sidflow.data.metadata_source`).
* ``url``: an HTTP(S) archive, downloaded resumably with retries and checked
  against its sha256, then extracted like ``local``. The archive is cached under
  ``data/downloads/<dataset>/<key>/`` with a key made of the URL (+ sha256 when given).

Each generator of the sheet names the sub-folder of the source that holds its
images (``source_subdir``).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from sidflow.data.archive import extract, is_archive
from sidflow.data.metadata_source import fetch_by_metadata
from sidflow.io import atomic_dir, atomic_path, sha256_bytes, sha256_file

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class ChecksumError(ValueError):
    pass


def _copy_folder(src: Path, dest: Path) -> int:
    if not src.is_dir():
        raise FileNotFoundError(f"local source folder {src} does not exist")
    count = 0
    for path in sorted(src.rglob("*")):
        if path.is_symlink():
            log.warning("skipping symbolic link %s (not followed)", path)
            continue
        if path.is_file():
            target = dest / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            count += 1
    if count == 0:
        raise FileNotFoundError(f"local source folder {src} holds no files")
    return count


def limits(source: dict) -> dict:
    """The source's decompression limits for :func:`sidflow.data.archive.extract`."""
    out = {}
    if source.get("max_extract_gb"):
        out["max_bytes"] = int(float(source["max_extract_gb"]) * (1 << 30))
    if source.get("max_ratio"):
        out["max_ratio"] = float(source["max_ratio"])
    return out


def fetch_local(path: Path, subdir: str, dest: Path, limit: dict | None = None) -> int:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"local source {path} does not exist")
    if path.is_dir():
        if any(c in subdir for c in "*?["):
            folders = sorted(p for p in path.glob(subdir) if p.is_dir())
            if not folders:
                raise FileNotFoundError(f"local source {path} has no folder matching {subdir!r}")
            return sum(_copy_folder(f, dest / f.relative_to(path)) for f in folders)
        return _copy_folder(path / subdir if subdir else path, dest)
    if not is_archive(path):
        raise ValueError(f"local source {path} is neither a folder nor a zip/tar archive")
    return extract(path, dest, prefix=subdir, **(limit or {}))


def download_url(
    url: str,
    dest: Path,
    sha256: str | None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 2.0,
) -> Path:
    """Download ``url`` to ``dest`` resumably (HTTP Range) and verify its sha256.

    A ``dest.part`` file is resumed on the next call. A finished file whose
    checksum matches is not downloaded again.
    """
    import requests

    dest = Path(dest)
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url source must be http(s), got {url!r}")
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for attempt in range(1, retries + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=timeout) as resp:
                if resp.status_code == 416:  # already complete
                    break
                resp.raise_for_status()
                mode = "ab" if have and resp.status_code == 206 else "wb"
                with open(part, mode) as fh:
                    for chunk in resp.iter_content(1 << 20):
                        fh.write(chunk)
            break
        except (requests.RequestException, OSError) as exc:
            last_error = exc
            log.warning("download %s failed (attempt %d/%d): %s", url, attempt, retries, exc)
            time.sleep(backoff * attempt if attempt < retries else 0)
    else:
        raise ConnectionError(f"could not download {url} after {retries} attempts: {last_error}")
    if sha256 is not None:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise ChecksumError(f"{url}: sha256 {got} does not match the expected {sha256}")
    else:
        log.warning("%s has no sha256 in config; recorded %s", url, sha256_file(part))
    part.replace(dest)
    return dest


def archive_path(source: dict, download_dir: Path) -> Path:
    """Where a url source's archive is cached: ``<download_dir>/<key>/<file name>``, the key
    a hash of the URL (+ the sha256 when given), so a changed URL never reuses another's file."""
    url = source["url"]
    name = source.get("filename") or url.rstrip("/").rsplit("/", 1)[-1]
    key = sha256_bytes(f"{url}\n{source.get('sha256') or ''}".encode())[:16]
    return Path(download_dir) / key / name


def fetch_url(source: dict, subdir: str, dest: Path, download_dir: Path) -> int:
    if not source.get("url"):
        raise ValueError("url source without a url (set datasets.<name>.source.url)")
    archive = download_url(source["url"], archive_path(source, download_dir), source.get("sha256"))
    return extract(archive, dest, prefix=subdir, **limits(source))


def fetch_demo(source: dict, generator: str, dest: Path, seed: int) -> int:
    from sidflow.data.demo import build_generator

    return build_generator(generator, dest, source, seed)


def fetch_generator(
    dataset: str,
    source: dict,
    generator: dict,
    dest: str | Path,
    seed: int = 0,
    download_dir: str | Path = "data/downloads",
) -> dict:
    """Run the download step for one (dataset, generator); returns a small summary."""
    kind = source["type"]
    fetchers: dict[str, Callable[[Path], int]] = {
        "builtin-demo": lambda tmp: fetch_demo(source, generator["generator"], tmp, seed),
        "local": lambda tmp: (
            fetch_by_metadata(
                Path(source["path"]), source["metadata"], generator.get("source_subdir", ""), tmp
            )
            if source.get("metadata")
            else fetch_local(
                Path(source["path"]), generator.get("source_subdir", ""), tmp, limits(source)
            )
        ),
        "url": lambda tmp: fetch_url(
            source, generator.get("source_subdir", ""), tmp, Path(download_dir) / dataset
        ),
    }
    if kind not in fetchers:
        raise ValueError(
            f"dataset {dataset}: unknown source type {kind!r} (known: {sorted(fetchers)})"
        )
    with atomic_dir(dest) as tmp:
        n = fetchers[kind](tmp)
    log.info("%s/%s: %d files from %s source", dataset, generator["generator"], n, kind)
    return {"dataset": dataset, "generator": generator["generator"], "files": n, "source": kind}


__all__ = ["fetch_generator", "download_url", "fetch_local", "ChecksumError", "atomic_path"]
