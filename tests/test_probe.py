"""Probe grid: classifiers, reductions, safe model files, feature cache, cells, ranking, matrix."""

import numpy as np
import pandas as pd
import pytest

from helpers import jpeg_bytes, rgb_array
from sidflow.io import write_parquet
from sidflow.probe import plan
from sidflow.probe.classifiers import CLASSIFIERS, load_model, make_model, save_model
from sidflow.probe.features import COLUMNS, compute_probe_features, load_features
from sidflow.probe.grid import cross_matrix, fit_cell, rank_cells

GENS = [("d", "real", 0), ("d", "fa", 1), ("d", "fb", 1)]


def toy(n=60, dim=8, seed=0, shift=2.5):
    """Separable features: fakes shifted along the first axes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:, :3] += shift * y[:, None]
    return x, y


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("reduction", [{}, {"pca": 0.9}, {"autoencoder": 4}])
def test_every_classifier_and_reduction_learns_a_separable_task(name, reduction, tmp_path):
    x, y = toy(200)
    xt, yt = toy(60, seed=1)
    model = make_model(reduction, name, seed=0).fit(x, y)
    p = model.predict_proba(xt)[:, 1]
    assert p.shape == (60,) and ((0 <= p) & (p <= 1)).all()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(yt, p) > 0.8, (name, reduction)
    sha = save_model(model, tmp_path / "m.skops")
    again = load_model(tmp_path / "m.skops", sha)
    np.testing.assert_allclose(again.predict_proba(xt)[:, 1], p, rtol=1e-6)


def test_pca_keeps_the_variance_asked_for():
    x, y = toy(100, dim=20)
    model = make_model({"pca": 0.5}, "logreg").fit(x, y)
    pca = model.named_steps["pca"]
    assert pca.explained_variance_ratio_.sum() >= 0.5 and pca.n_components_ < 20


def test_model_file_with_another_hash_is_refused(tmp_path):
    x, y = toy()
    sha = save_model(make_model({}, "lda").fit(x, y), tmp_path / "m.skops")
    with pytest.raises(ValueError, match="differs from the recorded"):
        load_model(tmp_path / "m.skops", "0" * 64)
    assert sha != "0" * 64


def write_features(root, backbone, transform, seed=0, dim=6):
    """Feature files as probe_features writes them, for GENS x splits."""
    paths = []
    rng = np.random.default_rng(seed)
    for d, g, label in GENS:
        n = 45
        x = rng.normal(size=(n, dim)).astype(np.float32) + (
            1.2 * label if g != "fb" else 0.8 * label
        )
        df = pd.DataFrame({"image_id": [f"{g}{i}" for i in range(n)],
                           "split": np.array(["train", "val", "test"])[np.arange(n) % 3],
                           "label": label, "dataset": d, "generator": g, "features": list(x)})  # fmt: skip
        p = root / backbone / transform / d / f"{g}.parquet"
        write_parquet(p, df)
        paths.append(str(p))
    return paths


def test_cell_ranking_and_cross_matrix(tmp_path):
    feats = {
        t: [write_features(tmp_path / "f", "bb", t, seed=i)] for i, t in enumerate(("none", "blur"))
    }
    cards = []
    for clf in ("logreg", "knn3"):
        out = tmp_path / "cells" / clf
        cards.append(
            fit_cell(feats, ["d/real", "d/fa"], "bb", "none", {}, clf, "none", out, max_train=0)
        )
        metrics = pd.read_parquet(out / "metrics.parquet")
        assert set(metrics["perturbation"]) == {"none", "blur"}
        assert set(metrics["generator"]) == {"real", "fa", "fb", "mean", "all"}
        scores = pd.read_parquet(out / "scores.parquet")
        assert set(scores[scores["perturbation"] == "blur"]["split"]) == {"test"}  # val only clean
        assert load_model(out / "model.skops", cards[-1]["model_sha256"]) is not None
    assert all(0.5 < c["val_ap"] <= 1 for c in cards)
    # the training accuracy beside the test accuracy (knn3 remembers its training points)
    assert all(0.5 < c["train_accuracy"] <= 1 for c in cards) and cards[1]["train_accuracy"] >= 0.9
    table = rank_cells(
        [tmp_path / "cells" / c for c in ("logreg", "knn3")],
        tmp_path / "r.csv",
        tmp_path / "m.parquet",
    )
    assert list(table["rank"]) == [1, 2] and table["val_ap"].is_monotonic_decreasing
    assert {"ap[d/fa]", "ap[d/fb]", "ap[blur]", "test_ap_mean", "train_accuracy"} <= set(
        table.columns
    )
    assert table["test_ap_mean"].to_numpy() == pytest.approx(
        ((table["ap[d/fa]"] + table["ap[d/fb]"]) / 2).to_numpy()
    )
    cross = cross_matrix(feats["none"], {}, "logreg", tmp_path / "cross.csv")
    assert set(zip(cross["train"], cross["test"], strict=True)) == {
        (a, b) for a in ("d/fa", "d/fb") for b in ("d/fa", "d/fb")
    }
    assert cross["ap"].between(0, 1).all() and (cross["n_test"] == 30).all()
    # the best cell per backbone (by validation AP), crossed under every train-time transform
    from sidflow.probe.grid import best_cells, cross_best

    best = best_cells(table)
    assert len(best) == 1 and best.iloc[0]["classifier"] == table.iloc[0]["classifier"]
    out = cross_best(tmp_path / "r.csv", {"bb": feats}, {"none": {}}, tmp_path / "best.csv")
    assert set(out["transform"]) == {"none", "blur"} and set(out["classifier"]) == {
        table.iloc[0]["classifier"]
    }
    assert len(out) == 2 * 4 and pd.read_csv(tmp_path / "best.csv").shape == out.shape
    same = out[out["transform"] == "none"].reset_index(drop=True)
    again = cross_matrix(feats["none"], {}, same.loc[0, "classifier"], None)
    assert same["ap"].to_numpy() == pytest.approx(
        again["ap"].to_numpy()
    )  # clean train = the plain matrix
    blur = out[out["transform"] == "blur"]["ap"].to_numpy()
    assert not np.allclose(blur, same["ap"].to_numpy())  # trained on the other transform's features
    from sidflow.report.probe_section import cross_best_section

    page = cross_best_section(out)
    assert "Best cell of each backbone" in page and page.count("<svg") == 1 and ">blur<" in page


def test_concatenated_backbones_join_by_image(tmp_path):
    a = write_features(tmp_path, "a", "none", seed=0, dim=3)
    b = write_features(tmp_path, "b", "none", seed=1, dim=5)
    df, X = load_features([a, b])
    assert X.shape == (135, 8) and len(df) == 135
    np.testing.assert_allclose(X[:, 3:], load_features([b])[1])


def make_generator(root, n=12):
    """A processed folder + manifest with n real JPEGs (the layout preprocess/label write)."""
    ids = [f"{i:064x}" for i in range(n)]
    proc = root / "processed"
    write_parquet(proc / "part-00000.parquet", pd.DataFrame({"image_id": ids,
                  "jpeg": [jpeg_bytes(rgb_array(i, 32)) for i in range(n)]}))  # fmt: skip
    man = pd.DataFrame({"image_id": ids, "dataset": "d", "generator": "real", "label": 0,
                        "split": np.array(["train", "val", "test"])[np.arange(n) % 3]})  # fmt: skip
    write_parquet(root / "man.parquet", man)
    return root / "man.parquet", proc


def test_feature_cache_computes_each_image_once(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite_pytorch")
    man, proc = make_generator(tmp_path)
    spec = {"arch": "efficientnet-lite0", "resize": 40, "image_size": 32}
    cache = tmp_path / "cache"
    first = compute_probe_features(spec, man, proc, [{"blur": 1.0}], tmp_path / "f1.parquet", cache)
    assert first == {"rows": 12, "computed": 12}
    feats = np.stack(pd.read_parquet(tmp_path / "f1.parquet")["features"])
    assert feats.shape == (12, 1280) and np.isfinite(feats).all() and feats.std() > 0

    from sidflow.probe import backbones

    def broken(self, *a, **k):
        raise AssertionError("the cache should have been hit")

    monkeypatch.setattr(backbones.Backbone, "embed", broken)
    second = compute_probe_features(
        spec, man, proc, [{"blur": 1.0}], tmp_path / "f2.parquet", cache
    )
    assert second["computed"] == 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "f1.parquet"), pd.read_parquet(tmp_path / "f2.parquet")
    )


def test_feature_cache_of_an_empty_manifest(tmp_path):
    man, proc = make_generator(tmp_path)
    pd.read_parquet(man).iloc[:0].to_parquet(man)
    spec = {"arch": "clip", "checkpoint": "tiny", "image_size": 32,
            "tiny": {"hidden_size": 16, "layers": 1, "heads": 2, "patch_size": 8}}  # fmt: skip
    out = tmp_path / "f.parquet"
    assert compute_probe_features(spec, man, proc, [], out, tmp_path / "cache") == {
        "rows": 0,
        "computed": 0,
    }
    df = pd.read_parquet(out)
    assert len(df) == 0 and list(df.columns) == [*COLUMNS, "features"]


def test_efficientnet_weights_are_the_pretrained_ones():
    pytest.importorskip("efficientnet_lite_pytorch")
    from sidflow.probe.backbones import create_backbone

    bb = create_backbone({"arch": "efficientnet-lite0"}, device="cpu")
    assert (bb.resize, bb.image_size, bb.mean[0], bb.std[0]) == (256, 224, 127.0, 128.0)
    # an ImageNet-trained stem is far from its random init: filters have structure
    w = bb.model._conv_stem.weight.detach()
    fresh = type(bb.model).from_name("efficientnet-lite0")._conv_stem.weight.detach()
    assert not np.allclose(w.numpy(), fresh.numpy()) and w.abs().mean() > 0.05


GRID = {
    "enabled": True,
    "backbones": {"e": {"arch": "efficientnet-lite0"}, "t": {"arch": "teacher", "teacher": "vitgpt2"},
                  "et": {"arch": "concat", "parts": ["e", "t"]}},
    "transforms": {"none": [], "blur": [{"blur": 1.0}]},
    "reductions": {"none": {}, "pca": {"pca": 0.9}},
    "grid": {"backbones": ["e", "et"], "reductions": ["none", "pca"], "classifiers": ["logreg", "knn1", "lda"],
             "transforms": ["none", "blur"]},
    "cross": {"backbone": "", "reduction": "none", "classifier": "logreg"},
}  # fmt: skip


def test_grid_expands_to_cells_and_checks_names():
    cfg = {"probe": GRID, "experiment": {"teachers": ["vitgpt2"], "students": {}}}
    plan.check_probe(cfg)
    assert len(plan.cells(GRID)) == 2 * 2 * 3 * 2
    assert plan.leaf_backbones(GRID) == ["e", "t"] and plan.cross_backbone(GRID) == "e"
    assert plan.transforms(GRID) == ["none", "blur"]
    bad = {**GRID, "grid": {**GRID["grid"], "reductions": ["ae"]}}
    with pytest.raises(ValueError, match="reductions"):
        plan.check_probe({**cfg, "probe": bad})
    with pytest.raises(ValueError, match="not in experiment.teachers"):
        plan.check_probe({**cfg, "experiment": {"teachers": [], "students": {}}})


def test_offline_backbones_load_from_local_files(tmp_path):
    """CLIP (tiny), DINO ViT (a saved folder) and DINO ResNet-50 (a state-dict file) through the
    registry: the hub ids of the real weights load the same way from the local cache."""
    import torch
    import torchvision
    from safetensors.torch import save_file
    from transformers import ViTConfig, ViTModel

    from sidflow.probe.backbones import create_backbone

    images = np.stack([rgb_array(i, 32) for i in range(3)])
    clip = create_backbone({"arch": "clip", "checkpoint": "tiny", "image_size": 32,
                            "tiny": {"hidden_size": 32, "layers": 1, "heads": 2, "patch_size": 8}}, "cpu")  # fmt: skip
    assert clip.embed(images).shape == (3, 32)
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=32, patch_size=8), add_pooling_layer=False)  # fmt: skip
    vit.save_pretrained(tmp_path / "dino")
    dino = create_backbone({"arch": "dino-vit", "checkpoint": str(tmp_path / "dino"), "resize": 36,
                            "image_size": 32}, "cpu")  # fmt: skip
    assert dino.embed(images).shape == (3, 32)
    r50 = torchvision.models.resnet50(weights=None)
    save_file(
        {k: v.contiguous() for k, v in r50.state_dict().items()}, tmp_path / "r50.safetensors"
    )
    res = create_backbone({"arch": "dino-resnet50", "weights": str(tmp_path / "r50.safetensors"),
                           "resize": 36, "image_size": 32}, "cpu")  # fmt: skip
    feats = res.embed(images)
    r50.fc = torch.nn.Identity()
    x = res.prepare(images)
    np.testing.assert_allclose(feats, r50.eval()(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(
        ValueError, match="unknown probe backbone 'vgg'; known: clip, dino-resnet50"
    ):
        create_backbone({"arch": "vgg"})


def test_randomised_transforms_are_seeded_per_image_and_respect_p():
    from sidflow.data.perturb import apply_chain, check_chain

    rng = np.random.default_rng(0)
    images = [(rng.random((16, 16, 3)) * 255).astype(np.uint8) for _ in range(600)]
    chain = [{"blur": {"sigma": [0.5, 3.0], "p": 0.5}}, {"jitter": {"strength": 0.3, "p": 0.5}}]
    check_chain(chain)
    out = [apply_chain(a, chain) for a in images]
    changed = np.mean([not np.array_equal(o, a) for o, a in zip(out, images, strict=True)])
    assert 0.68 < changed < 0.82  # 1 - 0.5 * 0.5 of the images get at least one step
    assert all(
        np.array_equal(apply_chain(a, chain), o) for a, o in zip(images[:20], out[:20], strict=True)
    )
    blurred = np.mean([not np.array_equal(apply_chain(a, chain[:1]), a) for a in images])
    assert 0.44 < blurred < 0.56
    always = apply_chain(images[0], [{"blur": {"sigma": 1.0}}])  # p defaults to 1: a fixed blur
    assert np.array_equal(always, apply_chain(images[0], [{"blur": 1.0}]))
    for bad in ([{"blur": {"p": 0.5}}], [{"jpeg": {"sigma": 1}}], [{"blur": {"sigma": 1, "p": 2}}],
                [{"blur": {"sigma": [0, 99]}}]):  # fmt: skip
        with pytest.raises(ValueError):
            check_chain(bad)


def test_goodness_factor_and_impact_per_factor():
    from sidflow.report.probe_section import goodness, impact_section, impact_table

    rank = pd.DataFrame({"backbone": ["a", "a", "a", "b", "b", "b"], "reduction": ["none"] * 6,
                         "classifier": ["logreg", "knn3", "logreg", "logreg", "knn3", "logreg"],
                         "transform": ["none", "none", "blur", "none", "none", "blur"],
                         "test_accuracy": [0.9, 0.7, 0.8, 0.6, 0.65, 0.7]})  # fmt: skip
    assert goodness(rank).tolist() == pytest.approx([0.2, 0.0, 0.1, 0.0, 0.05, 0.1])
    imp = impact_table(rank)
    assert set(imp) == {"transform", "classifier", "backbone"}  # reduction does not vary
    assert imp["classifier"]["logreg"] == pytest.approx((0.2 + 0.1 + 0.0 + 0.1) / 4)
    assert imp["classifier"]["knn3"] == pytest.approx(0.025)
    page = impact_section(rank)
    assert page.count("<svg") == 3 and "goodness factor" in page
