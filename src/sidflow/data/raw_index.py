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

How much is checked at each run (``watch_raw`` in the config):

* ``files``: every file is stat'ed (sees in-place edits too); ~15 s per million files;
* ``dirs``: only the folders are stat'ed against their mtimes of the last full scan (a file
  added, removed or renamed changes its folder's mtime); a changed folder triggers the full
  scan. It does not see a file rewritten in place under the same name;
* ``auto`` (``true``, the default): ``files`` for folders that held fewer than
  :data:`AUTO_FILES` files at the last scan, ``dirs`` above (GenImage-size folders plan in
  seconds instead of a minute);
* ``false``: no scan (e.g. a read-only archive).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

import pandas as pd

from sidflow.io import atomic_path, read_json, sha256_file, text_path, write_json

log = logging.getLogger(__name__)

COLUMNS = ["path", "size", "sha256"]
MARKER = ".snakemake_timestamp"
WATCH_MODES = ("auto", "files", "dirs")
AUTO_FILES = 200_000  # auto: per-file stats below this many files in a folder, folder mtimes above


def _scan(raw_dir: Path, dirs: dict[str, int] | None = None) -> list[tuple[str, int, int]]:
    """(relative posix path, size, mtime_ns) of every entry, sorted; plain strings and
    ``os.scandir`` keep a 2.5M-file rescan to seconds. Symbolic links are listed with their
    own ``lstat`` and not followed (preprocess quarantines them). ``dirs`` (optional) gets
    every folder's mtime_ns, by relative path (``""``: the root)."""
    out = []
    stack = [("", os.fspath(raw_dir))]
    if dirs is not None:
        dirs[""] = os.stat(raw_dir).st_mtime_ns
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((prefix + entry.name + "/", entry.path))
                    if dirs is not None:
                        dirs[text_path(prefix + entry.name)] = entry.stat(
                            follow_symlinks=False
                        ).st_mtime_ns
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
    raw_dir: str | os.PathLike,
    stat_cache: str | os.PathLike | None = None,
    dirs: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Every file below ``raw_dir`` with its size and SHA-256 (sorted by path).

    Digests of files whose (size, mtime) match ``stat_cache`` are reused; the cache is
    rewritten with the current state. ``dirs`` (optional) gets the folders' mtimes.
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
    for rel, size, mtime in _scan(raw_dir, dirs):
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


def write_index(raw_dir, index_path, stat_cache=None, signature=None) -> bool:
    """(Re)write ``index_path`` for ``raw_dir``; True when its content changed. ``signature``
    (a JSON path): where the scan's folder mtimes and file count are kept for ``dirs`` checks."""
    dirs: dict[str, int] = {}
    index = build_index(raw_dir, stat_cache, dirs)
    if signature is not None:
        Path(signature).parent.mkdir(parents=True, exist_ok=True)
        write_json(signature, {"files": len(index), "dirs": dirs})
    text = _render(index)
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


def folders_unchanged(raw_dir: Path, signature: Path) -> bool:
    """Whether every folder of the last full scan (``signature``) still has its mtime: then no
    file was added, removed or renamed (a new sub-folder changes its parent's mtime too)."""
    try:
        dirs = read_json(signature)["dirs"]
        return all(os.stat(raw_dir / rel).st_mtime_ns == m for rel, m in dirs.items()) and bool(
            dirs
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def refresh_indexes(pairs, stat_root, mode: str | bool = "auto") -> list[str]:
    """Refresh the index of every (raw_dir, index_path) whose index already exists, checking
    files or only folders as ``mode`` says (see the module docstring; ``True`` = ``auto``).

    Folders not downloaded yet are left to the download step. Returns the indexes that changed.
    """
    mode = "auto" if mode is True else mode
    if mode not in WATCH_MODES:
        raise ValueError(f"watch_raw: {mode!r} is not one of {WATCH_MODES} or true/false")
    changed = []
    for raw_dir, index_path in pairs:
        raw_dir, index_path = Path(raw_dir), Path(index_path)
        if not (index_path.exists() and raw_dir.is_dir()):
            continue
        stat_cache = Path(stat_root, index_path.parent.name, index_path.stem + ".parquet")
        signature = stat_cache.with_suffix(".dirs.json")
        if mode != "files" and signature.is_file():
            big = mode == "dirs" or _files_of(signature) >= AUTO_FILES
            if big and folders_unchanged(raw_dir, signature):
                continue
        if write_index(raw_dir, index_path, stat_cache, signature):
            changed.append(str(index_path))
            log.warning("raw files of %s changed: its steps will rerun", raw_dir)
    return changed


def _files_of(signature: Path) -> int:
    try:
        return int(read_json(signature)["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
