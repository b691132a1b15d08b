"""Captioning teacher: registry, loss goes down, caption scoring is a valid distribution."""

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sidflow.cache.store import ChunkStore, cached_rows
from sidflow.models import TEACHERS, TeacherConfig, create_teacher, load_teacher
from sidflow.models.vitgpt2 import build_word_tokenizer
from sidflow.tables import float_list, list_width

CFG = TeacherConfig(tiny={"hidden_size": 32, "layers": 1, "heads": 2, "patch_size": 8})


def test_registry_builds_tiny_vitgpt2():
    t = create_teacher("vitgpt2", CFG)
    assert "vitgpt2" in TEACHERS
    assert type(t.model).__name__ == "VisionEncoderDecoderModel"
    assert (
        type(t.model.encoder).__name__ == "ViTModel"
        and type(t.model.decoder).__name__ == "GPT2LMHeadModel"
    )
    with pytest.raises(KeyError, match="unknown teacher"):
        create_teacher("clip-magic", CFG)


def test_word_tokenizer_round_trips_caption_templates():
    tok = build_word_tokenizer({"real": "a real photo", "fake": "a fake photo"})
    ids = tok("a fake photo", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "a fake photo" and tok.unk_token_id not in ids


def _batch():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    y = torch.tensor([0, 1] * 4)
    x[y == 1] += 1.5  # separable
    return x, y


def _train(teacher, x, y, steps: int, lr: float) -> tuple[float, float]:
    """Plain AdamW steps on one batch; returns the loss before and after."""
    opt = torch.optim.AdamW(teacher.trainable_parameters(), lr=lr)
    first = teacher.loss(x, y).item()
    for _ in range(steps):
        loss = teacher.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, teacher.loss(x, y).item()


def test_training_lowers_loss_and_ranks_classes_on_its_batch(tmp_path):
    torch.manual_seed(0)
    t = create_teacher("vitgpt2", CFG)
    x, y = _batch()
    first, last = _train(t, x, y, steps=60, lr=3e-3)
    assert last < first * 0.5
    out = t.score(x)
    assert torch.all(out["logits"] <= 0)  # log-probabilities of whole captions
    assert (
        torch.logsumexp(out["logits"], 1).max() <= 1e-5
    )  # two captions cannot exceed probability 1
    assert ((out["p_fake"] >= 0.5).long() == y).all()
    assert [t.caption_to_class(c) for c in out["captions"]] == ["real", "fake"] * 4
    assert out["embedding"].shape == (8, 32)
    t.save(tmp_path / "t")
    again = load_teacher(tmp_path / "t")
    torch.testing.assert_close(again.score(x)["logits"], out["logits"])


def test_unknown_caption_is_reported_as_other():
    t = create_teacher("vitgpt2", CFG)
    assert t.caption_to_class("a cat") is None and t.caption_to_class(" Fake ") == "fake"


BLIP = TeacherConfig(
    arch="blip2",
    tiny={"hidden_size": 32, "layers": 1, "heads": 2, "patch_size": 8, "query_tokens": 4},
)


def test_registry_builds_tiny_blip2_with_image_tokens():
    t = create_teacher("blip2", BLIP)
    assert type(t.model).__name__ == "Blip2ForConditionalGeneration"
    batch = t.collate(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    image_id = t.model.config.image_token_index
    assert image_id is not None
    assert (batch["input_ids"][:, :4] == image_id).all()  # num_query_tokens placeholders first
    assert (batch["labels"][:, :5] == -100).all() and (batch["labels"][:, 5:] >= 0).all()


def test_blip2_scores_depend_on_the_image():
    torch.manual_seed(0)
    t = create_teacher("blip2", BLIP)
    x = torch.randn(4, 3, 32, 32)
    a = t.score(x)["logits"]
    b = t.score(x.flip(0))["logits"]
    assert not torch.allclose(a, b)  # the image reaches the language model
    torch.testing.assert_close(a.flip(0), b)


def test_blip2_lora_step_lowers_loss_and_touches_only_adapters():
    torch.manual_seed(0)
    cfg = TeacherConfig(
        arch="blip2", tiny=BLIP.tiny, lora={"enabled": True, "r": 4, "qformer": ["query", "value"]}
    )
    t = create_teacher("blip2", cfg)
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    trainable = {n for n, p in t.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any("qformer" in n for n in trainable) and any("language_model" in n for n in trainable)
    x, y = _batch()
    first, last = _train(t, x, y, steps=15, lr=1e-2)
    assert last < first
    changed = {n for n, p in t.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and changed <= trainable
    frozen_changed = [
        n
        for n, p in t.model.named_parameters()
        if n not in trainable and not torch.equal(before[n], p)
    ]
    assert frozen_changed == []


# -- the cached-feature step behind every cache (sidflow.cache.store.cached_rows)

ROW_SCHEMA = pa.schema([("image_id", pa.string()), ("x", pa.float32())])


def _manifest(ids, **cols) -> pd.DataFrame:
    return pd.DataFrame({"image_id": list(ids), **cols})


def _square(calls: list):
    """A compute that records the ids it is given and stores x = int(id) ** 2."""

    def compute(rows: pd.DataFrame) -> pd.DataFrame:
        calls.append(list(rows["image_id"]))
        return pd.DataFrame({"image_id": rows["image_id"].to_numpy(),
                             "x": [float(int(i) ** 2) for i in rows["image_id"]]})  # fmt: skip

    return compute


def _boom(rows):
    raise AssertionError("computed although every row is stored")


def test_cached_rows_of_an_empty_manifest_is_an_empty_table(tmp_path):
    store = ChunkStore(tmp_path / "store")
    out, computed = cached_rows(store, _manifest([]), _boom, ROW_SCHEMA, 4)
    assert computed == 0 and len(out) == 0 and list(out.columns) == ["image_id", "x"]
    # a width known only from the rows: the schema function also gets an empty frame
    vec = lambda r: pa.schema([("image_id", pa.string()), ("v", float_list(list_width(r, "v")))])  # noqa: E731
    out, _ = cached_rows(store, _manifest([], split=[]), _boom, vec, 4)
    assert list(out.columns) == ["image_id", "split", "v"] and store.chunks() == []
    pa.Table.from_pandas(out, schema=vec(out), preserve_index=False)  # writable as is


def test_cached_rows_computes_only_what_is_missing(tmp_path):
    store, calls = ChunkStore(tmp_path / "store"), []
    ids = [f"{i:02d}" for i in range(10)]
    half, computed = cached_rows(store, _manifest(ids[:5]), _square(calls), ROW_SCHEMA, 2)
    assert computed == 5 and calls == [ids[0:2], ids[2:4], ids[4:5]] and len(store.chunks()) == 3
    assert list(half["x"]) == [float(i**2) for i in range(5)]
    calls.clear()
    man = _manifest(ids[::-1], label=[i % 2 for i in range(10)])  # manifest order, extra column
    full, computed = cached_rows(store, man, _square(calls), ROW_SCHEMA, 2)
    assert computed == 5 and calls == [ids[9:7:-1], ids[7:5:-1], ids[5:4:-1]]
    assert list(full.columns) == ["image_id", "label", "x"] and list(full["image_id"]) == ids[::-1]
    assert list(full["x"]) == [float(i**2) for i in range(9, -1, -1)]
    again, computed = cached_rows(store, man, _boom, ROW_SCHEMA, 2)
    assert computed == 0 and len(store.chunks()) == 6
    pd.testing.assert_frame_equal(again, full)
    assert pq.read_schema(store.chunks()[0]).field("x").type == pa.float32()


def test_a_corrupt_chunk_is_set_aside_and_its_rows_computed_again(tmp_path, caplog):
    """Adversarial row 11: garbage in a cache chunk used to fail every later run."""
    store, calls = ChunkStore(tmp_path / "store"), []
    ids = [f"{i:02d}" for i in range(6)]
    cached_rows(store, _manifest(ids), _square(calls), ROW_SCHEMA, 2)
    middle = store.chunks()[1]
    middle.write_bytes(b"garbage, not parquet")
    calls.clear()
    out, computed = cached_rows(store, _manifest(ids), _square(calls), ROW_SCHEMA, 2)
    assert (
        computed == 2 and calls == [ids[2:4]] and list(out["x"]) == [float(i**2) for i in range(6)]
    )
    assert (
        middle.parent / (middle.name + ".corrupt")
    ).exists() and "unreadable cache chunk" in caplog.text
    # the recomputed rows went to a new chunk: no existing chunk was overwritten
    assert [c.name for c in store.chunks()] == [
        "chunk-000000.parquet",
        "chunk-000002.parquet",
        "chunk-000003.parquet",
    ]
    again, computed = cached_rows(store, _manifest(ids), _boom, ROW_SCHEMA, 2)
    assert computed == 0 and again.equals(out)


def test_a_corrupt_processed_shard_is_named_with_the_fix(tiny_dataset):
    from sidflow.data.loading import load_images
    from sidflow.data.preprocess import part_files

    proc = Path(tiny_dataset["root"]) / "proc-copy"
    import shutil

    shutil.copytree(tiny_dataset["processed"][0], proc)
    part_files(proc)[0].write_bytes(b"garbage")
    with pytest.raises(
        ValueError, match=r"part-00000.parquet: unreadable processed shard .* rerun"
    ):
        load_images([tiny_dataset["manifests"][0]], [proc])


def test_cached_rows_names_the_store_when_a_row_is_missing(tmp_path):
    store, calls = ChunkStore(tmp_path / "store"), []
    lossy = lambda rows: _square(calls)(rows).iloc[:-1]  # noqa: E731  (drops a chunk's last row)
    with pytest.raises(RuntimeError, match=r"1 of 3 manifest rows missing \(first: 02\)") as err:
        cached_rows(store, _manifest(["00", "01", "02"]), lossy, ROW_SCHEMA, 8)
    assert str(store.root) in str(err.value)


def test_teacher_cache_of_an_empty_manifest(tmp_path, monkeypatch):
    import sidflow.cache.teacher_cache as tc
    from sidflow.io import write_json

    write_json(
        tmp_path / "teacher" / "card.json", {"teacher": "vitgpt2", "checkpoint_hash": "ab" * 32}
    )
    man = tmp_path / "manifests" / "toy" / "real.parquet"
    man.parent.mkdir(parents=True)
    pd.DataFrame({"image_id": [], "dataset": [], "generator": [], "split": []}).to_parquet(man)
    monkeypatch.setattr(tc, "load_teacher", _boom)
    out = tmp_path / "cache.parquet"
    s = tc.build_teacher_cache(
        tmp_path / "teacher", man, tmp_path / "none", out, "{}", tmp_path / "store"
    )
    assert s == {"teacher": "vitgpt2", "rows": 0, "computed": 0, "caption_classes": {}}
    assert pq.read_schema(out).names == tc.cache_schema(8).names and len(pd.read_parquet(out)) == 0
    assert (tmp_path / "store" / f"vitgpt2-{'ab' * 6}" / "toy" / "real").is_dir()
