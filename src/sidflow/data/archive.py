"""Traversal-proof extraction of zip and tar archives.

Only regular files are extracted. A member with an absolute path, a ``..``
component, a drive letter, or that is a symlink, hard link, device or FIFO makes
the whole extraction fail with :class:`UnsafeArchiveError` naming the archive
and the member: a dataset archive has no business containing those.

Decompression bombs: before anything is written, the members' declared sizes are summed and
refused above ``max_bytes`` or above ``max_ratio`` times the archive's own size (image datasets
compress little: JPEG/PNG archives sit near 1:1); while writing, the bytes actually produced
are counted against the same limits, so a member that lies about its size stops the run too.
Both limits are configurable per dataset source (``max_extract_gb``, ``max_ratio``).
"""

from __future__ import annotations

import fnmatch
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO


class UnsafeArchiveError(ValueError):
    pass


DEFAULT_MAX_BYTES = 1 << 40  # 1 TiB extracted per archive
DEFAULT_MAX_RATIO = 100.0  # extracted bytes per archive byte


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


def _iter_zip(archive: Path) -> Iterator[tuple[str, int, callable]]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link")
            yield info.filename, info.file_size, (lambda i=info: zf.open(i))


def _iter_tar(archive: Path) -> Iterator[tuple[str, int, callable]]:
    with tarfile.open(archive) as tf:
        for member in tf:
            if member.isdir():
                continue
            if member.issym() or member.islnk():
                raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a link")
            if not member.isfile():
                raise UnsafeArchiveError(f"{archive}: member {member.name!r} is not a regular file")
            yield member.name, member.size, (lambda m=member: tf.extractfile(m))


def is_archive(path: Path) -> bool:
    return zipfile.is_zipfile(path) or (path.is_file() and tarfile.is_tarfile(path))


def _limit(
    archive: Path, size: int, total: int, max_bytes: int, max_ratio: float, what: str
) -> None:
    if total > max_bytes or total > max_ratio * max(size, 1):
        raise UnsafeArchiveError(
            f"{archive}: {what} {total:,} bytes from a {size:,}-byte archive (ratio {total / max(size, 1):,.0f}); "
            f"the limits are {max_bytes:,} bytes and ratio {max_ratio:g} (a decompression bomb? raise "
            "max_extract_gb / max_ratio in the dataset's source if the data is genuine)"
        )


def extract(archive: str | Path, dest: str | Path, prefix: str = "",
            max_bytes: int = DEFAULT_MAX_BYTES, max_ratio: float = DEFAULT_MAX_RATIO) -> int:  # fmt: skip
    """Extract regular files under ``prefix`` of ``archive`` into ``dest``.

    The prefix is stripped from the extracted paths. Returns the number of files
    written. Every member is checked before anything is written, including the
    decompression limits (``max_bytes``, ``max_ratio``), which also bound the bytes written.
    """
    archive = Path(archive)
    dest = Path(dest)
    size = archive.stat().st_size
    members = _iter_zip(archive) if zipfile.is_zipfile(archive) else _iter_tar(archive)
    # First pass: validate every member name (traversal, links) and the declared sizes.
    declared = 0
    for name, nbytes, _ in members:
        rel = _strip_prefix(_safe_relpath(archive, name), prefix)
        declared += int(nbytes) if rel is not None else 0
    _limit(archive, size, declared, max_bytes, max_ratio, "members declare")
    members = _iter_zip(archive) if zipfile.is_zipfile(archive) else _iter_tar(archive)
    count, written = 0, 0
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
            while chunk := src.read(1 << 20):
                written += len(chunk)
                _limit(archive, size, written, max_bytes, max_ratio, "extracting wrote")
                out.write(chunk)
        count += 1
    if count == 0:
        raise FileNotFoundError(f"{archive}: no files under {prefix!r}")
    return count
