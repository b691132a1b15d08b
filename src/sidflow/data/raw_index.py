"""Content index of a generator's raw folder, so Snakemake sees edits inside it.

Snakemake dates a ``directory()`` output by its ``.snakemake_timestamp`` marker, so editing,
adding or removing images inside ``data/raw/<dataset>/<generator>/`` is invisible to it. The
download step therefore also writes ``data/raw-index/<dataset>/<generator>.tsv`` (one line per
file: relative path, size, SHA-256), which preprocess and metadata take as input. At the start
of every run (``refresh_indexes``, called from ``workflow/rules/common.smk`` in the main
Snakemake process only) each existing index is recomputed and **rewritten only when the
content changed**: a changed subset reruns its own preprocess/label/cache/score jobs and the
aggregates; a ``touch`` without a content change reruns nothing.

Hashing is paid once per file: a stat cache (``.snakemake/sidflow-raw-stat/...``, keyed by path,
size and mtime) remembers the digests, so a rescan of an unchanged folder only stats files.
Turn the rescan off with ``watch_raw: false`` in the config (e.g. on a read-only archive).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

import pandas as pd

from sidflow.io import atomic_path, sha256_file, text_path

log = logging.getLogger(__name__)

COLUMNS = ["path", "size", "sha256"]
MARKER = ".snakemake_timestamp"


def _scan(raw_dir: Path) -> list[tuple[str, int, int]]:
    """(relative posix path, size, mtime_ns) of every entry, sorted; plain strings and
    ``os.scandir`` keep a 2.5M-file rescan to seconds. Symbolic links are listed with their
    own ``lstat`` and not followed (preprocess quarantines them)."""
    out = []
    stack = [("", os.fspath(raw_dir))]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((prefix + entry.name + "/", entry.path))
                elif entry.name != MARKER:
                    st = entry.stat(follow_symlinks=False)
                    out.append(
                        (prefix + entry.name, st.st_size, st.st_mtime_ns)
                    )  # raw name: opened below
    out.sort()
    return out


def _digest(path: Path) -> str:
    if path.is_symlink():  # the link itself, never its target (which may be missing)
        return "symlink:" + hashlib.sha256(os.readlink(path).encode()).hexdigest()
    mode = path.lstat().st_mode
    if not stat.S_ISREG(mode):  # a FIFO or device is never opened (it would block or not end)
        return "special:" + stat.filemode(mode)
    return sha256_file(path)


def build_index(
    raw_dir: str | os.PathLike, stat_cache: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Every file below ``raw_dir`` with its size and SHA-256 (sorted by path).

    Digests of files whose (size, mtime) match ``stat_cache`` are reused; the cache is
    rewritten with the current state.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"raw folder {raw_dir} does not exist")
    known: dict[tuple[str, int, int], str] = {}
    if stat_cache is not None and Path(stat_cache).exists():
        try:
            c = pd.read_parquet(stat_cache)
            keys = zip(c["path"].tolist(), c["size"].tolist(), c["mtime_ns"].tolist(), strict=True)
            known = dict(zip(keys, c["sha256"].tolist(), strict=True))
        except Exception as exc:  # a broken cache only costs a rehash
            log.warning("ignoring unreadable stat cache %s: %s", stat_cache, exc)
    rows, hashed = [], 0
    for rel, size, mtime in _scan(raw_dir):
        digest = known.get((text_path(rel), size, mtime))
        if digest is None:
            digest = _digest(raw_dir / rel)
            hashed += 1
        rows.append((text_path(rel), size, mtime, digest))
    full = pd.DataFrame(rows, columns=["path", "size", "mtime_ns", "sha256"])
    if stat_cache is not None and (hashed or len(full) != len(known)):
        Path(stat_cache).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(stat_cache) as tmp:
            full.to_parquet(tmp, index=False)
    log.debug("%s: %d files, %d hashed", raw_dir, len(full), hashed)
    return full[COLUMNS]


def _render(index: pd.DataFrame) -> str:
    return index.to_csv(sep="\t", index=False, lineterminator="\n")


def write_index(raw_dir, index_path, stat_cache=None) -> bool:
    """(Re)write ``index_path`` for ``raw_dir``; True when its content changed."""
    text = _render(build_index(raw_dir, stat_cache))
    index_path = Path(index_path)
    if index_path.exists() and index_path.read_text() == text:
        return False
    index_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(index_path) as tmp:
        Path(tmp).write_text(text)
    return True


def lock_held(locks_dir: str | os.PathLike = ".snakemake/locks") -> bool:
    """Whether another Snakemake run holds this working folder's lock (its lock files exist):
    then the raw indexes belong to that run and are not rewritten (adversarial row 17)."""
    folder = Path(locks_dir)
    held = folder.is_dir() and any(folder.glob("*.lock"))
    if held:
        log.warning(
            "another Snakemake run holds the lock (%s): raw indexes are not refreshed", folder
        )
    return held


def refresh_indexes(pairs, stat_root) -> list[str]:
    """Refresh the index of every (raw_dir, index_path) whose index already exists.

    Folders not downloaded yet are left to the download step. Returns the indexes that changed.
    """
    changed = []
    for raw_dir, index_path in pairs:
        raw_dir, index_path = Path(raw_dir), Path(index_path)
        if not (index_path.exists() and raw_dir.is_dir()):
            continue
        stat_cache = Path(stat_root, index_path.parent.name, index_path.stem + ".parquet")
        if write_index(raw_dir, index_path, stat_cache):
            changed.append(str(index_path))
            log.warning("raw files of %s changed: its steps will rerun", raw_dir)
    return changed
