"""Preprocess step: raw files of one generator -> sharded Parquet of normalised JPEGs.

Output folder ``data/processed/<dataset>/<generator>/``:

* ``part-NNNNN.parquet``: one row per accepted image (``image_id`` = sha256 of
  the source bytes, source metadata, the processed ``jpeg`` bytes and its hash);
* ``quarantine.parquet``: one row per rejected input with its reason;
* ``summary.json``: counts, where ``inputs == written + quarantined`` always holds.

Inputs are sorted and cut into fixed shards of ``shard_size`` files; the shards
are processed by a pool of ``threads`` workers and written as they finish, so
memory stays bounded whatever the dataset size. Work in progress lives in
``<out>.partial/``; a killed run resumes there, skipping finished shards.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from sidflow.data.images import DEFAULT_MAX_BYTES, BadImageError, normalize_image, read_image_file
from sidflow.io import atomic_dir, read_json, sha256_bytes, text_path, write_json, write_parquet
from sidflow.tables import PART_SCHEMA, QUARANTINE_SCHEMA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessParams:
    image_size: int = 64
    jpeg_quality: int = 90
    max_pixels: int = 64_000_000
    shard_size: int = 5000
    max_bytes: int = DEFAULT_MAX_BYTES  # larger files are quarantined without being read
    encode: str = "jpeg"  # jpeg | png | original (sidflow.data.images.ENCODE_MODES)


# Snakemake's marker in directory outputs; the only file that is not an input.
SNAKEMAKE_MARKER = ".snakemake_timestamp"


def list_inputs(raw_dir: Path) -> list[str]:
    """Every entry below ``raw_dir`` that is not a folder (relative POSIX paths, sorted): hidden
    files, links and special files (FIFOs, sockets) included, so that every stray entry is
    quarantined and counted rather than silently ignored."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"raw folder {raw_dir} does not exist")
    return sorted(
        p.relative_to(raw_dir).as_posix()
        for p in raw_dir.rglob("*")
        if (p.is_symlink() or not p.is_dir()) and p.name != SNAKEMAKE_MARKER  # FIFOs, devices too
    )


def process_one(args: tuple[Path, str, PreprocessParams]) -> tuple[str, dict]:
    """Return ("ok", row) or ("quarantine", row) for one input file; never raises."""
    raw_dir, rel, params = args
    path = Path(raw_dir) / rel
    rel = text_path(rel)  # as stored: an odd (non-UTF-8) byte in a name never stops the run

    def quarantined(reason: str, detail: str, data: bytes | None = None) -> tuple[str, dict]:
        return "quarantine", {
            "source_path": rel,
            "image_id": None if data is None else sha256_bytes(data),
            "source_bytes": None if data is None else len(data),
            "reason": reason,
            "detail": detail,
        }

    try:
        if path.is_symlink():
            return quarantined("symbolic link", "links are not followed")
        data = read_image_file(path, params.max_bytes)
    except BadImageError as exc:
        return quarantined(exc.reason, exc.detail)
    except OSError as exc:
        return quarantined("unreadable file", str(exc))
    try:
        norm = normalize_image(
            data, params.image_size, params.jpeg_quality, params.max_pixels, params.encode
        )
    except BadImageError as exc:
        return quarantined(exc.reason, exc.detail, data)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not kill a 2M-image run
        return quarantined("unexpected decoder error", f"{type(exc).__name__}: {exc}", data)
    image_id = sha256_bytes(data)
    row = asdict(norm)
    row.update(
        image_id=image_id,
        source_path=rel,
        source_bytes=len(data),
        pixel_sha256=sha256_bytes(norm.jpeg),
    )
    return "ok", row


def _plan_key(inputs: list[str], params: PreprocessParams) -> str:
    settings = asdict(params)
    for key, default in (("encode", "jpeg"), ("max_bytes", DEFAULT_MAX_BYTES)):
        if settings[key] == default:
            del settings[key]  # a default keeps the key it had before the setting existed
    return sha256_bytes(("\n".join(map(text_path, inputs)) + repr(settings)).encode())


def _shard_key(raw_dir: Path, shard: list[str]) -> str:
    """What a shard's output depends on besides the parameters: its files' names, sizes,
    modification times and inodes (lstat: links are not followed)."""
    lines = []
    for rel in shard:
        try:
            st = (raw_dir / rel).lstat()
            lines.append(f"{text_path(rel)}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ino}")
        except OSError as exc:
            lines.append(f"{text_path(rel)}\t{type(exc).__name__}")
    return sha256_bytes("\n".join(lines).encode())


def preprocess_generator(
    raw_dir: str | Path,
    out_dir: str | Path,
    params: PreprocessParams,
    threads: int = 1,
    progress: bool = False,
) -> dict:
    """Run the preprocess step for one generator; returns the summary dict."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    inputs = list_inputs(raw_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    key = _plan_key(inputs, params)
    plan_file = partial / "plan.json"
    if partial.exists() and (not plan_file.exists() or read_json(plan_file).get("key") != key):
        log.info("discarding stale partial output %s (inputs or parameters changed)", partial)
        shutil.rmtree(partial)
    shards = [inputs[i : i + params.shard_size] for i in range(0, len(inputs), params.shard_size)]
    # a finished shard is reused only if none of its files changed since (size, mtime, inode):
    # a raw file replaced in place under the same name must not keep its stale shard
    shard_keys = [_shard_key(raw_dir, shard) for shard in shards]
    done_keys = read_json(plan_file).get("shard_keys", []) if plan_file.exists() else []
    partial.mkdir(parents=True, exist_ok=True)
    write_json(
        plan_file,
        {"key": key, "inputs": len(inputs), "params": asdict(params), "shard_keys": shard_keys},
    )
    # fork: workers need nothing but this module, and spawn would re-run the calling
    # script (a Snakemake script cannot be re-imported outside Snakemake).
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    pool = mp.get_context(method).Pool(threads) if threads > 1 else None
    try:
        for index, shard in enumerate(shards):
            part = partial / f"part-{index:05d}.parquet"
            qpart = partial / f"quarantine-{index:05d}.parquet"
            if part.exists() and qpart.exists():
                if index < len(done_keys) and done_keys[index] == shard_keys[index]:
                    log.info("shard %d already done, skipping", index)
                    continue
                log.info("shard %d: its files changed since it was written, redoing it", index)
            jobs = [(raw_dir, rel, params) for rel in shard]
            results = (
                pool.map(process_one, jobs, chunksize=64) if pool else list(map(process_one, jobs))
            )
            ok = [r for status, r in results if status == "ok"]
            bad = [r for status, r in results if status == "quarantine"]
            for row in bad:
                log.warning(
                    "quarantined %s: %s (%s)",
                    raw_dir / row["source_path"],
                    row["reason"],
                    row["detail"],
                )
            write_parquet(
                qpart, pd.DataFrame(bad, columns=QUARANTINE_SCHEMA.names), QUARANTINE_SCHEMA
            )
            write_parquet(part, pd.DataFrame(ok, columns=PART_SCHEMA.names), PART_SCHEMA)
            if progress or index % 10 == 0:
                log.info(
                    "shard %d/%d: %d written, %d quarantined",
                    index + 1,
                    len(shards),
                    len(ok),
                    len(bad),
                )
    finally:
        if pool:
            pool.close()
            pool.join()
    return _finalize(partial, out_dir, len(inputs), len(shards), params)


def _finalize(
    partial: Path, out_dir: Path, n_inputs: int, n_shards: int, params: PreprocessParams
) -> dict:
    import pyarrow.parquet as pq

    qparts = [partial / f"quarantine-{i:05d}.parquet" for i in range(n_shards)]
    quarantine = (
        pd.concat([pd.read_parquet(q) for q in qparts], ignore_index=True)
        if qparts else pd.DataFrame(columns=QUARANTINE_SCHEMA.names)
    )  # fmt: skip
    parts = [partial / f"part-{i:05d}.parquet" for i in range(n_shards)]
    written = sum(pq.ParquetFile(part).metadata.num_rows for part in parts)
    encodings = pd.concat([pq.read_table(part, columns=["encoding"]).to_pandas() for part in parts]
                          or [pd.DataFrame({"encoding": []})])["encoding"].value_counts()  # fmt: skip
    summary = {
        "inputs": n_inputs,
        "written": int(written),
        "quarantined": int(len(quarantine)),
        "quarantine_reasons": {
            str(k): int(v) for k, v in quarantine["reason"].value_counts().items()
        },
        "shards": n_shards,
        "encodings": {
            str(k): int(v) for k, v in encodings.items()
        },  # how the processed bytes are encoded
        "params": asdict(params),
    }
    if summary["inputs"] != summary["written"] + summary["quarantined"]:
        raise RuntimeError(f"{out_dir}: counts do not reconcile: {summary}")
    with atomic_dir(out_dir) as tmp:
        for i in range(n_shards):
            (partial / f"part-{i:05d}.parquet").rename(tmp / f"part-{i:05d}.parquet")
        write_parquet(tmp / "quarantine.parquet", quarantine, QUARANTINE_SCHEMA)
        write_json(tmp / "summary.json", summary)
    shutil.rmtree(partial)
    log.info(
        "%s: %d inputs = %d written + %d quarantined %s",
        out_dir,
        n_inputs,
        summary["written"],
        summary["quarantined"],
        summary["quarantine_reasons"],
    )
    return summary


def part_files(processed_dir: str | Path) -> list[Path]:
    return sorted(Path(processed_dir).glob("part-*.parquet"))
