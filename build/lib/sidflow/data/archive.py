"""Traversal-proof extraction of zip and tar archives.

Only regular files are extracted. A member with an absolute path, a ``..``
component, a drive letter, or that is a symlink, hard link, device or FIFO makes
the whole extraction fail with :class:`UnsafeArchiveError` naming the archive
and the member: a dataset archive has no business containing those.
"""

from __future__ import annotations

import fnmatch
import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO


class UnsafeArchiveError(ValueError):
    pass


def _safe_relpath(archive: Path, name: str) -> PurePosixPath:
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if p.is_absolute() or norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    if any(part == ".." for part in p.parts):
        raise UnsafeArchiveError(f"{archive}: member {name!r} escapes the target folder (..)")
    return p


def _strip_prefix(p: PurePosixPath, prefix: str) -> PurePosixPath | None:
    """Path of ``p`` below ``prefix`` (None if outside). A glob prefix (``progan/*/1_fake``)
    matches part by part and keeps the whole path, so categories do not collide."""
    if not prefix:
        return p
    pre = PurePosixPath(prefix.strip("/"))
    n = len(pre.parts)
    if len(p.parts) <= n:
        return None
    if any(c in prefix for c in "*?["):
        ok = all(fnmatch.fnmatchcase(a, b) for a, b in zip(p.parts[:n], pre.parts, strict=True))
        return p if ok else None
    if p.parts[:n] != pre.parts:
        return None
    return PurePosixPath(*p.parts[n:])


def _iter_zip(archive: Path) -> Iterator[tuple[str, bool, callable]]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link")
            yield info.filename, True, (lambda i=info: zf.open(i))


def _iter_tar(archive: Path) -> Iterator[tuple[str, bool, callable]]:
    with tarfile.open(archive) as tf:
        for member in tf:
            if member.isdir():
                continue
            if member.issym() or member.islnk():
                raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a link")
            if not member.isfile():
                raise UnsafeArchiveError(f"{archive}: member {member.name!r} is not a regular file")
            yield member.name, True, (lambda m=member: tf.extractfile(m))


def is_archive(path: Path) -> bool:
    return zipfile.is_zipfile(path) or (path.is_file() and tarfile.is_tarfile(path))


def extract(archive: str | Path, dest: str | Path, prefix: str = "") -> int:
    """Extract regular files under ``prefix`` of ``archive`` into ``dest``.

    The prefix is stripped from the extracted paths. Returns the number of files
    written. Every member is checked before anything is written.
    """
    archive = Path(archive)
    dest = Path(dest)
    members = _iter_zip(archive) if zipfile.is_zipfile(archive) else _iter_tar(archive)
    # First pass: validate every member name (traversal, links) before writing anything.
    for name, _, _ in members:
        _safe_relpath(archive, name)
    members = _iter_zip(archive) if zipfile.is_zipfile(archive) else _iter_tar(archive)
    count = 0
    root = dest.resolve()
    for name, _, opener in members:
        rel = _strip_prefix(_safe_relpath(archive, name), prefix)
        if rel is None:
            continue
        target = (dest / rel).resolve()
        if root not in target.parents:
            raise UnsafeArchiveError(f"{archive}: member {name!r} resolves outside {dest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        src: BinaryIO = opener()
        with src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        count += 1
    if count == 0:
        raise FileNotFoundError(f"{archive}: no files under {prefix!r}")
    return count
