"""Teacher fine-tune -> cache -> student -> scores -> predict, on a tiny separable dataset."""

import pandas as pd
import pytest

from sidflow.cache.teacher_cache import build_teacher_cache
from sidflow.train.distill import DistillConfig, train_student


@pytest.fixture
def trained(tiny_dataset, tiny_teacher):
    """The tiny dataset (with this test's own root) and the session's fine-tuned tiny ViT-GPT2
    (conftest.tiny_teacher: hidden 32, 1 layer, 2 epochs, batch 16, lr 2e-3)."""
    return tiny_dataset | tiny_teacher


def test_teacher_card_and_cache_schema(trained):
    root = trained["root"]
    assert len(trained["card"]["history"]) == 2 and len(trained["card"]["checkpoint_hash"]) == 64
    assert (trained["teacher"] / "model" / "model.safetensors").exists()
    cost = trained["card"]["finetune_cost"]  # a tiny teacher trains every weight (no LoRA)
    assert cost["mode"] == "full" and cost["trainable_params"] == cost["total_params"] > 0
    assert cost["train_seconds"] > 0 and cost["peak_memory_mb"] > 50 and cost["device"] == "cpu"
    out = root / "cache" / "vitgpt2" / "toy" / "fake.parquet"
    s = build_teacher_cache(trained["teacher"], trained["manifests"][1], trained["processed"][1], out, "{}",
                            cache_root=root / "cache")  # fmt: skip
    cache = pd.read_parquet(out)
    man = pd.read_parquet(trained["manifests"][1])
    assert s["computed"] == len(man) == len(cache) and list(cache["image_id"]) == list(
        man["image_id"]
    )
    assert {"logit_real", "logit_fake", "p_fake", "caption", "caption_class", "embedding", "teacher_hash",
            "preprocess", "code_version"} <= set(cache.columns)  # fmt: skip
    assert cache["p_fake"].between(0, 1).all() and len(cache["embedding"].iloc[0]) == 32
    assert set(cache["caption_class"]) <= {"real", "fake", "other"}
    assert (cache["teacher_hash"] == trained["card"]["checkpoint_hash"]).all()


def test_cache_is_incremental_and_resumes(trained, monkeypatch):
    root = trained["root"]
    man_all = pd.read_parquet(trained["manifests"][0])
    half = root / "half.parquet"
    man_all.iloc[: len(man_all) // 2].to_parquet(half)
    out = root / "c.parquet"
    kw = {"cache_root": root / "cache", "chunk_rows": 8}
    first = build_teacher_cache(trained["teacher"], half, trained["processed"][0], out, "{}", **kw)
    assert first["computed"] == len(man_all) // 2
    # Snakemake deletes outputs before a rerun; the store keeps computed rows.
    out.unlink()
    second = build_teacher_cache(
        trained["teacher"], trained["manifests"][0], trained["processed"][0], out, "{}", **kw
    )
    assert second["computed"] == len(man_all) - len(man_all) // 2 and second["rows"] == len(man_all)
    third = build_teacher_cache(
        trained["teacher"], trained["manifests"][0], trained["processed"][0], out, "{}", **kw
    )
    assert third["computed"] == 0


def test_student_trains_from_cache_without_running_a_teacher(trained, monkeypatch, tmp_path):
    root = trained["root"]
    caches = []
    for man, proc, gen in zip(
        trained["manifests"], trained["processed"], ["real", "fake"], strict=True
    ):
        out = root / "cache" / "vitgpt2" / "toy" / f"{gen}.parquet"
        build_teacher_cache(trained["teacher"], man, proc, out, "{}", cache_root=root / "cache")
        caches.append(str(out))

    import sidflow.models.teachers as teachers

    def boom(*a, **k):
        raise AssertionError("a teacher was instantiated during student training")

    monkeypatch.setattr(teachers, "create_teacher", boom)
    monkeypatch.setattr(teachers, "load_teacher", boom)
    from sidflow.models.student import StudentConfig

    meta = train_student(StudentConfig(image_size=32), DistillConfig(epochs=6, batch_size=16, lr=3e-3, beta=0.5),
                         trained["manifests"], trained["processed"], {"vitgpt2": caches}, root / "student",
                         preprocess={"image_size": 32, "jpeg_quality": 95})  # fmt: skip
    assert meta["teachers"] == ["vitgpt2"] and 0 <= meta["threshold"] <= 1
    assert all(h["kd_loss"] > 0 and h["feat_loss"] > 0 for h in meta["history"])
    assert meta["val_ap"] > 0.8  # the toy task is separable

    from sidflow.evaluate.scores import score_student

    n = score_student(
        root / "student",
        trained["manifests"][1],
        trained["processed"][1],
        "student-kd",
        tmp_path / "s.parquet",
    )
    s = pd.read_parquet(tmp_path / "s.parquet")
    assert (
        len(s) == n and set(s["split"]) <= {"val", "test"} and (s["detector"] == "student-kd").all()
    )
    # every view of a generator in one job, each equal to its own single-view call
    from sidflow.evaluate.scores import score_student_views

    chain, man1, proc1 = [{"jpeg": 50}], trained["manifests"][1], trained["processed"][1]
    score_student(root / "student", man1, proc1, "student-kd", tmp_path / "j.parquet",
                  perturbation="jpeg50", chain=chain)  # fmt: skip
    views = {"none": (tmp_path / "v0.parquet", []), "jpeg50": (tmp_path / "v1.parquet", chain)}
    rows = score_student_views(root / "student", man1, proc1, "student-kd", views)
    jpeg = pd.read_parquet(tmp_path / "j.parquet")
    assert rows == {"none": n, "jpeg50": len(jpeg)} and set(jpeg["split"]) == {"test"}
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "v0.parquet"), s)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "v1.parquet"), jpeg)

    from sidflow.cli import main

    raw = root / "raw" / "fake"
    (raw / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert (
        main(
            [
                "predict",
                "--model",
                str(root / "student"),
                str(raw),
                "--output",
                str(tmp_path / "p.csv"),
                "--quiet",
            ]
        )
        == 0
    )
    preds = pd.read_csv(tmp_path / "p.csv")
    assert len(preds) == 61
    broken = preds[preds["path"].str.endswith("broken.png")].iloc[0]
    assert (
        broken["verdict"] == "quarantined"
        and "truncated" in broken["reason"]
        or "image" in broken["reason"]
    )
    ok = preds[preds["verdict"] != "quarantined"]
    assert (ok["verdict"] == "fake").mean() > 0.8 and ok["p_fake"].between(0, 1).all()


def test_student_training_is_deterministic(tiny_dataset):
    from safetensors.torch import load_file

    from sidflow.models.student import StudentConfig

    root = tiny_dataset["root"]
    metas = []
    for run in ("a", "b"):
        metas.append(
            train_student(
                StudentConfig(image_size=32),
                DistillConfig(alpha=0.0, epochs=1, batch_size=16, seed=7),
                tiny_dataset["manifests"],
                tiny_dataset["processed"],
                {},
                root / run,
            )
        )
    wa, wb = (
        load_file(str(root / "a" / "model.safetensors")),
        load_file(str(root / "b" / "model.safetensors")),
    )
    assert all((wa[k] == wb[k]).all() for k in wa)
    timing = ("seconds", "images_per_s")
    strip = [{k: v for k, v in h.items() if k not in timing} for m in metas for h in m["history"]]
    assert strip[0] == strip[1]


def test_lora_fine_tuning_records_its_smaller_trainable_share(tiny_data, tmp_path):
    from sidflow.models.teachers import TeacherConfig
    from sidflow.train.teacher import FinetuneConfig, finetune_teacher

    tiny = {"hidden_size": 32, "layers": 1, "heads": 2, "patch_size": 8, "query_tokens": 4}
    cfg = TeacherConfig(
        arch="blip2", tiny=tiny, lora={"enabled": True, "r": 2, "qformer": ["query"]}
    )
    card = finetune_teacher("blip2", cfg, FinetuneConfig(epochs=1, batch_size=16, max_train_images=32),
                            tiny_data["manifests"], tiny_data["processed"], tmp_path / "t")  # fmt: skip
    cost = card["finetune_cost"]
    assert cost["mode"] == "lora" and 0 < cost["trainable_params"] < cost["total_params"] / 2
