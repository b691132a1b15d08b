"""Atomic writes respect the umask (adversarial row 18: every output was 0600 / folders 0700)."""

import os
import stat

import pandas as pd
import pytest

from sidflow.io import atomic_dir, write_json, write_parquet


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                             (0o002, 0o664, 0o775)])  # fmt: skip
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_parquet(tmp_path / "t.parquet", pd.DataFrame({"x": [1]}))
        with atomic_dir(tmp_path / "model") as tmp:
            write_json(tmp / "card.json", {})
    finally:
        os.umask(old)
    for f in ("a.json", "t.parquet", "model/card.json"):
        assert stat.S_IMODE((tmp_path / f).stat().st_mode) == file_mode, f
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == dir_mode


def test_predict_output_respects_the_umask(tmp_path):
    from sidflow.predict import ResultsFile

    old = os.umask(0o022)
    try:
        out = ResultsFile(tmp_path / "p.csv", "csv")
        out.write(
            {
                "path": "x.png",
                "p_fake": 0.1,
                "verdict": "real",
                "threshold": 0.5,
                "model": "m",
                "reason": "",
            }
        )
        out.commit()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p.csv").stat().st_mode) == 0o644


def test_image_bytes_are_stored_plain_and_the_rest_compressed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sidflow.tables import PART_SCHEMA

    blobs = [os.urandom(3000) for _ in range(20)]  # as incompressible as JPEG bytes
    df = pd.DataFrame({n: None for n in PART_SCHEMA.names}, index=range(20)).assign(
        image_id=[f"{i:064x}" for i in range(20)], jpeg=blobs, encoding="jpeg", width=32
    )
    write_parquet(tmp_path / "part.parquet", df, PART_SCHEMA)
    meta = pq.ParquetFile(tmp_path / "part.parquet").metadata.row_group(0)
    cols = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert cols["jpeg"].compression == "UNCOMPRESSED" and not cols["jpeg"].has_dictionary_page
    assert cols["image_id"].compression == "ZSTD" and cols["encoding"].has_dictionary_page
    back = pd.read_parquet(tmp_path / "part.parquet")
    assert list(back["jpeg"]) == blobs and list(back["image_id"]) == list(df["image_id"])
    # a table with nested columns keeps zstd everywhere (leaf paths are not mapped)
    nested = pa.table({"jpeg": blobs, "logits": [[0.5, 1.5]] * 20})
    write_parquet(tmp_path / "nested.parquet", nested)
    meta = pq.ParquetFile(tmp_path / "nested.parquet").metadata.row_group(0)
    assert {meta.column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}
    assert pq.read_table(tmp_path / "nested.parquet").equals(nested)
