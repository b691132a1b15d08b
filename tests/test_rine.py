"""RINE: modules, losses, the CLIP token cache and end-to-end training on cached tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from helpers import SHARED
from sidflow.cache.clip_features import (
    backbone_step,
    build_clip_features,
    read_tokens,
    tokens_schema,
)
from sidflow.data.augment import augmented, draw_chain
from sidflow.data.perturb import apply_chain
from sidflow.io import write_json, write_parquet
from sidflow.models.rine import RineConfig, create_rine, rine_loss, supcon_loss
from sidflow.train.rine import load_rine, score_rine, score_rine_views, train_rine

TINY_CLIP = {"checkpoint": "tiny", "image_size": 32,
             "tiny": {"hidden_size": 32, "layers": 3, "heads": 4, "patch_size": 8}}  # fmt: skip


def test_module_shapes_and_gradients():
    model = create_rine(RineConfig(n_blocks=5, dim=12, nproj=2, proj_dim=8))
    out = model(torch.randn(7, 5, 12))
    assert out["logit"].shape == (7,) and out["features"].shape == (7, 8)
    loss = rine_loss(out, torch.tensor([0, 1, 0, 1, 1, 0, 1]), contrastive_weight=0.5)
    loss["loss"].backward()
    for name in ("proj1", "proj2", "head"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), name
    assert model.importance.grad is not None and model.importance.grad.abs().sum() > 0
    assert len([m for m in model.head if isinstance(m, torch.nn.Linear)]) == 3


def test_importance_scores_sum_to_one():
    model = create_rine({"n_blocks": 6, "dim": 4, "nproj": 1, "proj_dim": 3})
    with torch.no_grad():
        model.importance.normal_(0, 3)
    w = model.block_weights()
    assert w.shape == (6, 3) and torch.allclose(w.sum(0), torch.ones(3))
    assert torch.isclose(model.block_importance().sum(), torch.tensor(1.0))


def test_wrong_token_shape_is_a_clear_error():
    model = create_rine(RineConfig(n_blocks=4, dim=8, nproj=1, proj_dim=4))
    with pytest.raises(ValueError, match=r"\(B, 4, 8\)"):
        model(torch.randn(2, 3, 8))


def test_supcon_matches_definition_and_prefers_clusters():
    z = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
    y = torch.tensor([0, 0, 1, 1])
    t = 0.5
    zn = torch.nn.functional.normalize(z, dim=1)
    expected = []
    for i in range(4):
        others = [a for a in range(4) if a != i]
        denom = torch.logsumexp(torch.stack([zn[i] @ zn[a] / t for a in others]), 0)
        pos = [p for p in others if y[p] == y[i]]
        expected.append(-torch.stack([zn[i] @ zn[p] / t - denom for p in pos]).mean())
    assert torch.isclose(supcon_loss(z, y, t), torch.stack(expected).mean(), atol=1e-6)
    clustered = torch.tensor([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0], [-1.0, 0.1]])
    mixed = torch.tensor([[1.0, 0.0], [-1.0, 0.1], [1.0, 0.1], [-1.0, 0.0]])
    assert supcon_loss(clustered, y) < supcon_loss(mixed, y)
    alone = supcon_loss(torch.randn(2, 3, requires_grad=True), torch.tensor([0, 1]))
    assert alone.item() == 0.0 and not torch.isnan(alone)


def test_bce_only_when_contrastive_weight_is_zero():
    model = create_rine(RineConfig(n_blocks=2, dim=4, nproj=1, proj_dim=4))
    out = model(torch.randn(6, 2, 4))
    res = rine_loss(out, torch.tensor([0, 1, 1, 0, 1, 0]), contrastive_weight=0.0)
    assert torch.equal(res["loss"], res["bce_loss"]) and res["contrastive_loss"].item() == 0.0


def test_augmentation_views_are_seeded_and_follow_probabilities():
    arr = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    a1 = augmented(arr, "img-1", 1, seed=3, spec={"blur_prob": 1.0, "jpeg_prob": 1.0})
    assert np.array_equal(
        a1, augmented(arr, "img-1", 1, seed=3, spec={"blur_prob": 1.0, "jpeg_prob": 1.0})
    )
    assert not np.array_equal(
        a1, augmented(arr, "img-1", 2, seed=3, spec={"blur_prob": 1.0, "jpeg_prob": 1.0})
    )
    off = {"blur_prob": 0.0, "jpeg_prob": 0.0, "flip": False}
    assert np.array_equal(augmented(arr, "img-1", 1, 3, off), arr)
    # sidflow's earlier draws (reference: false): PIL blur, quality uniform in the range
    rng = np.random.default_rng(0)
    chains = [draw_chain(rng, {"jpeg_quality": [30, 40], "reference": False}) for _ in range(2000)]
    blur = np.mean([any("blur" in s for s in c) for c in chains])
    jpeg = [s["jpeg"] for c in chains for s in c if "jpeg" in s]
    assert (
        0.45 < blur < 0.55
        and 0.45 < len(jpeg) / 2000 < 0.55
        and min(jpeg) >= 30
        and max(jpeg) <= 40
        and len(set(jpeg)) > 2
    )


def test_reference_draws_match_the_rine_code():
    """mever-team/rine data_augment: blur p 0.5 (scipy, sigma U[0, 3]), then JPEG p 0.5 at a
    quality chosen from {30, 100} by an encoder chosen from {OpenCV, PIL}; crop, flip p 0.5."""
    rng = np.random.default_rng(1)
    chains = [draw_chain(rng, {}) for _ in range(4000)]
    sigmas = [s["gaussian"] for c in chains for s in c if "gaussian" in s]
    steps = [(k, v) for c in chains for s in c for k, v in s.items() if k.startswith("jpeg")]
    assert 0.47 < len(sigmas) / 4000 < 0.53 and 0 < min(sigmas) and max(sigmas) <= 3.0
    assert 0.47 < len(steps) / 4000 < 0.53 and {v for _, v in steps} == {30, 100}
    cv2_share = np.mean([k == "jpeg_cv2" for k, _ in steps])
    assert 0.45 < cv2_share < 0.55 and all(
        list(c[0])[0] == "gaussian" for c in chains if len(c) == 2
    )
    arr = (np.random.default_rng(0).random((40, 36, 3)) * 255).astype(np.uint8)
    views = [
        augmented(arr, f"img-{i}", 1, 0, {"blur_prob": 0, "jpeg_prob": 0, "crop": 24})
        for i in range(400)
    ]
    assert all(v.shape == (24, 24, 3) for v in views)
    # a crop is a window of the image; half of them mirrored
    flipped = 0
    for v in views:
        hits = [
            np.array_equal(v, arr[y : y + 24, x : x + 24]) for y in range(17) for x in range(13)
        ]
        mirrored = [
            np.array_equal(v[:, ::-1], arr[y : y + 24, x : x + 24])
            for y in range(17)
            for x in range(13)
        ]
        assert any(hits) or any(mirrored)
        flipped += not any(hits)
    assert 0.4 < flipped / 400 < 0.6
    with pytest.raises(ValueError, match="crop 64 is larger than the 40x36"):
        augmented(arr, "x", 1, 0, {"crop": 64})


def test_opencv_jpeg_and_scipy_gaussian_operations():
    arr = (np.random.default_rng(2).random((32, 32, 3)) * 255).astype(np.uint8)
    cv, pil = apply_chain(arr, [{"jpeg_cv2": 50}]), apply_chain(arr, [{"jpeg": 50}])
    # both wrap libjpeg with the standard tables here: lossy, and (nearly) the same bytes
    assert cv.shape == arr.shape and not np.array_equal(cv, arr)
    assert np.abs(cv.astype(int) - pil.astype(int)).max() <= 2
    smooth = np.broadcast_to(
        np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 32, 3)
    ).copy()
    assert np.abs(apply_chain(smooth, [{"jpeg_cv2": 100}]).astype(int) - smooth).mean() < 3
    from scipy.ndimage import gaussian_filter

    g = apply_chain(arr, [{"gaussian": 1.5}])
    want = np.clip(np.rint(gaussian_filter(arr[..., 1].astype(float), 1.5)), 0, 255)
    assert np.array_equal(g[..., 1], want.astype(np.uint8))


def _toy_tokens(root, n_per_class=150, n_blocks=4, dim=6, informative=2, seed=0):
    """Manifests + token files where only block ``informative`` carries the label."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in (0, 1):
        for i in range(n_per_class):
            split = ("train", "train", "train", "val", "test")[i % 5]
            rows.append({"image_id": f"{label}-{i}", "label": label, "split": split, "dataset": "toy",
                         "generator": "fake" if label else "real"})  # fmt: skip
    man = pd.DataFrame(rows)
    paths = {"manifests": [], "views": {"aug1": [], "aug2": []}, "none": []}
    for gen, g in man.groupby("generator"):
        mp = root / "manifests" / f"{gen}.parquet"
        mp.parent.mkdir(parents=True, exist_ok=True)
        g.to_parquet(mp)
        paths["manifests"].append(mp)
        for view in ("aug1", "aug2", "none"):
            toks = rng.normal(size=(len(g), n_blocks, dim)).astype(np.float32)
            toks[:, informative, :] += (g["label"].to_numpy() * 2 - 1)[:, None]
            df = pd.DataFrame({"image_id": g["image_id"].to_numpy(), "tokens": list(toks.reshape(len(g), -1)),
                               "view": view, "code_version": "test"})  # fmt: skip
            p = root / "features" / gen / f"{view}.parquet"
            write_parquet(p, pa.Table.from_pandas(df, schema=tokens_schema(n_blocks, dim, "x" * 64),
                                                  preserve_index=False))  # fmt: skip
            (paths["none"] if view == "none" else paths["views"][view]).append(p)
    return paths


def test_tiny_rine_learns_a_separable_toy_task(tmp_path):
    from sklearn.metrics import average_precision_score

    paths = _toy_tokens(tmp_path)
    settings = {"nproj": 1, "proj_dim": 16, "dropout": 0.1, "epochs": 25, "batch_size": 32, "lr": 3e-3,
                "lr_decay_epochs": [20], "contrastive_weight": 0.2}  # fmt: skip
    meta = train_rine(
        paths["manifests"],
        paths["views"],
        paths["none"],
        settings,
        seed=5,
        out_dir=tmp_path / "rine",
    )
    assert meta["val_ap"] > 0.95 and 0 < meta["threshold"] < 1
    imp = np.array(meta["block_importance"])
    assert imp.shape == (4,) and np.isclose(imp.sum(), 1.0)
    assert len(meta["history"]) == 25 and meta["history"][-1]["lr"] == pytest.approx(3e-4)
    assert meta["history"][18]["lr"] == pytest.approx(3e-3)
    out = tmp_path / "scores.parquet"
    n = score_rine(tmp_path / "rine", paths["manifests"][0], paths["none"][0], "rine", out)
    scores = pd.read_parquet(out)
    assert (
        n == len(scores)
        and set(scores["split"]) == {"val", "test"}
        and set(scores["detector"]) == {"rine"}
    )
    both = pd.concat([pd.read_parquet(out)] + [
        (score_rine(tmp_path / "rine", paths["manifests"][1], paths["none"][1], "rine", tmp_path / "s2.parquet"),
         pd.read_parquet(tmp_path / "s2.parquet"))[1]])  # fmt: skip
    test = both[both["split"] == "test"]
    assert average_precision_score(test["label"], test["p_fake"]) > 0.95
    model, card = load_rine(tmp_path / "rine")
    assert card["views"] == ["aug1", "aug2"] and not model.training
    # one scoring job writes every view of a generator; a perturbation view scores test only
    views = {"none": (paths["none"][0], tmp_path / "v0.parquet"),
             "aug1": (paths["views"]["aug1"][0], tmp_path / "v1.parquet")}  # fmt: skip
    rows = score_rine_views(tmp_path / "rine", paths["manifests"][0], "rine", views)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "v0.parquet"), scores)
    aug = pd.read_parquet(tmp_path / "v1.parquet")
    assert rows == {"none": n, "aug1": len(aug)} and set(aug["split"]) == {"test"}
    assert set(aug["perturbation"]) == {"aug1"}


def test_training_is_deterministic(tmp_path):
    paths = _toy_tokens(tmp_path, n_per_class=40)
    settings = {"nproj": 1, "proj_dim": 8, "epochs": 2, "batch_size": 16}
    a = train_rine(
        paths["manifests"], paths["views"], paths["none"], settings, seed=1, out_dir=tmp_path / "a"
    )
    b = train_rine(
        paths["manifests"], paths["views"], paths["none"], settings, seed=1, out_dir=tmp_path / "b"
    )
    assert a["history"] == b["history"] and a["block_importance"] == b["block_importance"]


def test_killed_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import sidflow.train.rine as rine

    paths = _toy_tokens(tmp_path, n_per_class=40)
    settings = {"nproj": 1, "proj_dim": 8, "epochs": 3, "batch_size": 16}
    args = (paths["manifests"], paths["views"], paths["none"], settings)
    full = train_rine(*args, seed=1, out_dir=tmp_path / "full", checkpoint_dir=tmp_path / "c1")
    assert not (tmp_path / "c1").exists()  # removed once the model is saved
    fit = rine.fit

    def killed(*a, **k):
        def hook(epoch):
            if epoch == 2:
                raise InterruptedError

        return fit(*a, **k, on_epoch_end=hook)

    monkeypatch.setattr(rine, "fit", killed)
    with pytest.raises(InterruptedError):
        train_rine(*args, seed=1, out_dir=tmp_path / "part", checkpoint_dir=tmp_path / "c2")
    assert not (tmp_path / "part").exists() and (tmp_path / "c2" / "state.json").exists()
    monkeypatch.setattr(rine, "fit", fit)
    resumed = train_rine(*args, seed=1, out_dir=tmp_path / "part", checkpoint_dir=tmp_path / "c2")
    assert resumed == full


def test_missing_tokens_name_the_file(tmp_path):
    paths = _toy_tokens(tmp_path, n_per_class=20)
    with pytest.raises(ValueError, match="no cached CLIP tokens"):
        train_rine(paths["manifests"], {"aug1": paths["views"]["aug1"][:1]}, paths["none"], {"epochs": 1},
                   seed=0, out_dir=tmp_path / "m")  # fmt: skip


def test_clip_cache_is_incremental_and_skips_clip(tiny_dataset, monkeypatch):
    import sidflow.cache.clip_features as cf

    root = tiny_dataset["root"]
    card = backbone_step(TINY_CLIP, seed=0, out_dir=root / "clip")
    assert (card["n_blocks"], card["dim"]) == (3, 32) and len(card["checkpoint_hash"]) == 64
    man_path, proc = tiny_dataset["manifests"][1], tiny_dataset["processed"][1]
    man = pd.read_parquet(man_path)
    half = man.iloc[: len(man) // 2]
    half_path = root / "half.parquet"
    half.to_parquet(half_path)
    kw = {
        "cache_root": root / "features",
        "augment": {"blur_prob": 1.0, "jpeg_prob": 1.0},
        "seed": 0,
    }
    first = build_clip_features(
        root / "clip", half_path, proc, root / "f" / "a.parquet", view="none", **kw
    )
    assert first["computed"] == len(half)
    full = build_clip_features(
        root / "clip", man_path, proc, root / "f" / "b.parquet", view="none", **kw
    )
    assert full["computed"] == len(man) - len(half) and full["rows"] == len(man)

    def no_clip(*a, **k):
        raise AssertionError("CLIP was re-run although every row is cached")

    monkeypatch.setattr(cf, "load_clip", no_clip)
    again = build_clip_features(
        root / "clip", man_path, proc, root / "f" / "c.parquet", view="none", **kw
    )
    assert again["computed"] == 0
    ids, toks = read_tokens([root / "f" / "b.parquet"])
    ids2, toks2 = read_tokens([root / "f" / "c.parquet"])
    assert (
        toks.shape == (len(man), 3, 32)
        and list(ids) == list(man["image_id"])
        and np.array_equal(toks, toks2)
    )
    monkeypatch.undo()
    aug = build_clip_features(
        root / "clip", man_path, proc, root / "f" / "aug1.parquet", view="aug1", **kw
    )
    assert aug["rows"] == int((man["split"] == "train").sum())
    _, taug = read_tokens([root / "f" / "aug1.parquet"])
    clean = toks[(man["split"] == "train").to_numpy()]
    assert taug.shape == clean.shape and not np.allclose(
        taug, clean
    )  # blurred + JPEG'd images differ
    pert = build_clip_features(root / "clip", man_path, proc, root / "f" / "jpeg.parquet", view="jpeg50",
                               chain=[{"jpeg": 50}], **kw)  # fmt: skip
    assert pert["rows"] == int((man["split"] == "test").sum())
    with pytest.raises(ValueError, match="needs its chain"):
        build_clip_features(
            root / "clip", man_path, proc, root / "f" / "x.parquet", view="blur9", **kw
        )
    # every view of a generator in one call: the encoder loaded once, the same tokens
    calls, real_load = [], cf.load_clip
    monkeypatch.setattr(cf, "load_clip", lambda d: calls.append(d) or real_load(d))
    g = root / "g"
    views = {"none": (g / "none.parquet", []), "aug1": (g / "aug1.parquet", []),
             "jpeg50": (g / "jpeg50.parquet", [{"jpeg": 50}])}  # fmt: skip
    kw["cache_root"] = root / "features2"  # a fresh store: every row computed again
    done = cf.build_clip_views(root / "clip", man_path, proc, views, **kw)
    assert len(calls) == 1 and all(done[v]["computed"] == done[v]["rows"] > 0 for v in views)
    for view, single in (("none", "b"), ("aug1", "aug1"), ("jpeg50", "jpeg")):
        _, many = read_tokens([g / f"{view}.parquet"])
        # (b.parquet was computed in two batches: equal up to float summation order)
        assert np.allclose(many, read_tokens([root / "f" / f"{single}.parquet"])[1], atol=1e-5), (
            view
        )


def test_clip_features_of_an_empty_split(tmp_path, monkeypatch):
    import sidflow.cache.clip_features as cf

    write_json(
        tmp_path / "clip" / "card.json", {"checkpoint_hash": "cd" * 32, "n_blocks": 3, "dim": 4}
    )
    man = tmp_path / "manifests" / "toy" / "real.parquet"
    write_parquet(man, pd.DataFrame({"image_id": ["a"], "dataset": ["toy"], "generator": ["real"],
                                     "split": ["train"]}))  # fmt: skip
    monkeypatch.setattr(cf, "load_clip", lambda *a: pytest.fail("CLIP loaded for no rows"))
    out = tmp_path / "f" / "none.parquet"
    s = build_clip_features(tmp_path / "clip", man, tmp_path / "none", out, tmp_path / "store",
                            view="jpeg50", chain=[{"jpeg": 50}])  # fmt: skip
    ids, toks = read_tokens([out])
    assert s == {"rows": 0, "computed": 0, "view": "jpeg50"} and len(ids) == 0
    assert toks.shape == (0, 3, 4)


def test_block_tokens_are_the_layer_norm2_cls_tokens():
    from sidflow.models.clip import (
        ClipConfig,
        block_cls_tokens,
        build_clip,
        clip_pixels,
        encoder_layers,
    )

    model = build_clip(ClipConfig(tiny=TINY_CLIP["tiny"]))
    x = clip_pixels((np.random.default_rng(1).random((2, 20, 20, 3)) * 255).astype(np.uint8), 32)
    assert x.shape == (2, 3, 32, 32)
    toks = block_cls_tokens(model, x)
    hs = model(pixel_values=x, output_hidden_states=True).hidden_states  # inputs of each block
    for i, layer in enumerate(encoder_layers(model)):
        h = hs[i]
        mid = h + layer.self_attn(layer.layer_norm1(h))[0]
        assert torch.allclose(toks[:, i], layer.layer_norm2(mid)[:, 0], atol=1e-5)
    assert not any(p.requires_grad for p in model.parameters())


def test_standardisation_is_saved_with_the_model(tmp_path):
    paths = _toy_tokens(tmp_path, n_per_class=40)
    settings = {"nproj": 1, "proj_dim": 8, "epochs": 2, "batch_size": 16, "standardize": True}
    train_rine(
        paths["manifests"], paths["views"], paths["none"], settings, seed=1, out_dir=tmp_path / "m"
    )
    model, card = load_rine(tmp_path / "m")
    man = pd.concat([pd.read_parquet(m) for m in paths["manifests"]])
    train_ids = set(man.loc[man["split"] == "train", "image_id"])
    rows = []
    for view in ("aug1", "aug2"):
        ids, toks = read_tokens(paths["views"][view])
        rows.append(toks[ids.isin(train_ids).to_numpy()])
    stacked = np.concatenate(rows)
    assert card["train"]["standardize"]
    assert np.allclose(model.token_mean.numpy(), stacked.mean(0), atol=1e-5)
    assert np.allclose(model.token_std.numpy(), stacked.std(0) + 1e-6, atol=1e-5)


RINE_WEIGHTS = SHARED / "models" / "rine" / "model_2class_trainable.pth"


def _reference_rine_forward(state: dict, tokens: torch.Tensor) -> torch.Tensor:
    """The published model's forward pass written out by hand (eval mode: dropout is the
    identity): Q1 on every block's token, softmax(alpha) over blocks * g summed, Q2, head."""

    def mlp(x, prefix, idx, last_relu=True):
        for j, i in enumerate(idx):
            x = x @ state[f"{prefix}.{i}.weight"].T + state[f"{prefix}.{i}.bias"]
            x = torch.relu(x) if last_relu or j < len(idx) - 1 else x
        return x

    g = mlp(tokens, "proj1", (1, 4, 7, 10))  # (B, 24, 128)
    z = (torch.softmax(state["alpha"], dim=1) * g).sum(dim=1)
    z = mlp(z, "proj2", (1, 4, 7, 10))
    return mlp(z, "head", (0, 3, 6), last_relu=False).squeeze(1)


@pytest.mark.data
def test_published_rine_weights_load_one_to_one_and_match_the_reference_forward():
    if not RINE_WEIGHTS.exists():
        pytest.skip("../shared/models/rine is absent (outside this workplace)")
    from sidflow.models.rine import load_published_rine

    model = load_published_rine(str(RINE_WEIGHTS))
    state = torch.load(RINE_WEIGHTS, map_location="cpu", weights_only=True)
    assert (model.cfg.n_blocks, model.cfg.dim, model.cfg.nproj, model.cfg.proj_dim) == (
        24,
        1024,
        4,
        128,
    )
    own = model.state_dict()
    torch.testing.assert_close(own["importance"], state["alpha"][0], rtol=0, atol=0)
    for key, value in state.items():
        if key != "alpha":
            torch.testing.assert_close(own[key], value, rtol=0, atol=0)
    tokens = torch.randn(6, 24, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logit = model(tokens)["logit"]
    torch.testing.assert_close(logit, _reference_rine_forward(state, tokens), rtol=1e-5, atol=1e-5)
    assert logit.std() > 0  # not a constant


def test_published_rine_weights_refuse_a_wrong_shape_or_extra_tensor(tmp_path):
    from sidflow.models.rine import RineConfig, create_rine, load_published_rine

    model = create_rine(RineConfig(n_blocks=3, dim=8, nproj=2, proj_dim=4))
    state = {("alpha" if k == "importance" else k): v for k, v in model.state_dict().items()
             if not k.startswith("token_")}  # fmt: skip
    state["alpha"] = state["alpha"][None]
    torch.save(state, tmp_path / "ok.pth")
    again = load_published_rine(str(tmp_path / "ok.pth"))
    assert (again.cfg.n_blocks, again.cfg.dim, again.cfg.nproj, again.cfg.proj_dim) == (3, 8, 2, 4)
    bad = dict(state, **{"head.0.weight": torch.zeros(5, 4)})
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(
        ValueError, match=r"tensor 'head.0.weight' has shape \(5, 4\), the model expects \(4, 4\)"
    ):
        load_published_rine(str(tmp_path / "bad.pth"))
    torch.save(dict(state, extra=torch.zeros(1)), tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="unexpected tensor 'extra'"):
        load_published_rine(str(tmp_path / "extra.pth"))
    torch.save({k: v for k, v in state.items() if k != "head.6.bias"}, tmp_path / "short.pth")
    with pytest.raises(ValueError, match=r"missing tensors \['head.6.bias'\]"):
        load_published_rine(str(tmp_path / "short.pth"))


def test_importance_ablations_mean_and_last_block():
    from sidflow.models.rine import RineConfig, create_rine

    tokens = torch.randn(5, 4, 6)
    for mode, want in (("mean", [0.25] * 4), ("last", [0, 0, 0, 1])):
        model = create_rine(RineConfig(n_blocks=4, dim=6, nproj=1, proj_dim=8, importance=mode))
        assert model.block_importance().tolist() == pytest.approx(want)
        assert not model.importance.requires_grad  # nothing to learn about the blocks
        assert model(tokens)["logit"].shape == (5,)
    last = create_rine(RineConfig(n_blocks=4, dim=6, nproj=1, proj_dim=8, importance="last")).eval()
    changed = tokens.clone()
    changed[:, :3] += 5.0  # only the last block is read
    assert torch.allclose(last(tokens)["logit"], last(changed)["logit"])
    with pytest.raises(ValueError, match="importance must be one of"):
        create_rine(RineConfig(importance="first"))


def test_mean_importance_and_a_training_fraction_train_through_the_workflow_step(tmp_path):
    paths = _toy_tokens(tmp_path, n_per_class=40)
    settings = {"nproj": 1, "proj_dim": 8, "epochs": 2, "batch_size": 16, "importance": "mean",
                "train_fraction": 0.5}  # fmt: skip
    meta = train_rine(paths["manifests"], paths["views"], paths["none"], settings, seed=1,
                      out_dir=tmp_path / "m")  # fmt: skip
    assert meta["block_importance"] == pytest.approx([0.25] * 4)
    assert meta["train_images"] == 24  # half of the 24 training images per class
    assert meta["rine"]["importance"] == "mean"


def test_published_weights_are_evaluated_as_published(tmp_path):
    from sidflow.models.rine import RineConfig, create_rine

    paths = _toy_tokens(tmp_path, n_per_class=20)
    torch.manual_seed(0)
    ref = create_rine(RineConfig(n_blocks=4, dim=6, nproj=2, proj_dim=8)).eval()
    state = {("alpha" if k == "importance" else k): v for k, v in ref.state_dict().items()
             if not k.startswith("token_")}  # fmt: skip
    state["alpha"] = state["alpha"].unsqueeze(0)  # the reference stores (1, n_blocks, proj_dim)
    torch.save(state, tmp_path / "model_2class_trainable.pth")
    settings = {"nproj": 2, "proj_dim": 8, "weights": str(tmp_path / "model_2class_trainable.pth")}
    meta = train_rine(paths["manifests"], paths["views"], paths["none"], settings, seed=0,
                      out_dir=tmp_path / "pub")  # fmt: skip
    assert meta["best_epoch"] == 0 and meta["history"] == []  # not trained
    loaded, _ = load_rine(tmp_path / "pub")
    x = torch.randn(3, 4, 6)
    assert torch.allclose(loaded(x)["logit"], ref(x)["logit"])
    bad = {**settings, "proj_dim": 16}
    with pytest.raises(ValueError, match=r"model_2class_trainable.pth: .*tensor 'alpha' has shape"):
        train_rine(
            paths["manifests"], paths["views"], paths["none"], bad, seed=0, out_dir=tmp_path / "x"
        )


def test_test_time_crops_shapes_and_positions():
    from sidflow.cache.clip_features import test_crops

    arr = (np.random.default_rng(3).random((40, 36, 3)) * 255).astype(np.uint8)
    assert test_crops(arr, "resize", 24).shape == (1, 40, 36, 3)
    centre = test_crops(arr, "center", 24)
    assert centre.shape == (1, 24, 24, 3) and np.array_equal(centre[0], arr[8:32, 6:30])
    ten = test_crops(arr, "tencrop", 24)
    assert ten.shape == (10, 24, 24, 3)
    assert np.array_equal(ten[0], arr[:24, :24]) and np.array_equal(ten[3], arr[16:, 12:])
    assert np.array_equal(ten[4], centre[0]) and np.array_equal(ten[5], arr[:, ::-1][:24, :24])
    with pytest.raises(ValueError, match="smaller than the 48 px"):
        test_crops(arr, "center", 48)


def test_ten_crop_scores_average_the_logits():
    from sidflow.models.rine import RineConfig, create_rine
    from sidflow.train.rine import predict_rine

    torch.manual_seed(0)
    model = create_rine(RineConfig(n_blocks=3, dim=4, nproj=1, proj_dim=4)).eval()
    with torch.no_grad():
        model.head[-1].weight.mul_(100)  # large logits: averaging them differs from averaging p
    tokens = np.random.default_rng(0).normal(size=(5, 10, 3, 4)).astype(np.float32) * 3
    with torch.no_grad():
        logits = model(torch.from_numpy(tokens.reshape(50, 3, 4)))["logit"].view(5, 10)
    want = torch.sigmoid(logits.mean(1)).numpy()
    assert np.allclose(predict_rine(model, tokens, "cpu", batch_size=2), want, atol=1e-6)
    # not the mean of the probabilities
    assert not np.allclose(want, torch.sigmoid(logits).mean(1).numpy(), rtol=0.1, atol=0)


def test_ten_crop_features_are_cached_per_crop(tiny_dataset):
    root = tiny_dataset["root"]
    backbone_step(TINY_CLIP, seed=0, out_dir=root / "clip")
    man_path, proc = tiny_dataset["manifests"][0], tiny_dataset["processed"][0]
    kw = {"cache_root": root / "features", "seed": 0, "augment": {}}
    s = build_clip_features(
        root / "clip", man_path, proc, root / "t.parquet", test_crop="tencrop", **kw
    )
    ids, toks = read_tokens([root / "t.parquet"])
    assert toks.shape == (len(ids), 10, 3, 32) and s["computed"] == len(ids)
    c = build_clip_features(
        root / "clip", man_path, proc, root / "c.parquet", test_crop="center", **kw
    )
    assert c["computed"] == len(ids)  # another store: another key
    _, centre = read_tokens([root / "c.parquet"])
    assert np.allclose(centre, toks[:, 4], atol=1e-5)  # the 5th ten-crop is the centre crop


@pytest.mark.parametrize("test_crop", ["resize", "tencrop"])
def test_predict_classifies_a_folder_with_a_rine_model(tiny_dataset, tmp_path, test_crop, capsys):
    """A RINE folder (head + card) with its CLIP backbone scores raw images exactly as the
    pipeline scored the same images (same preprocessing, tokens and test-time crops)."""
    from sidflow.cli import main

    root = tiny_dataset["root"]
    backbone_step(TINY_CLIP, seed=0, out_dir=root / "clip")
    kw = {"cache_root": root / "features", "seed": 0, "augment": {"views": 1}}
    feats = {"none": [], "aug1": []}
    for man, proc in zip(tiny_dataset["manifests"], tiny_dataset["processed"], strict=True):
        name = Path(man).stem
        for view in feats:
            out = root / "f" / name / f"{view}.parquet"
            build_clip_features(root / "clip", man, proc, out, view=view, test_crop=test_crop, **kw)
            feats[view].append(out)
    pre = {"image_size": 32, "jpeg_quality": 95}
    train_rine(tiny_dataset["manifests"], {"aug1": feats["aug1"]}, feats["none"],
               {"nproj": 1, "proj_dim": 16, "epochs": 2, "batch_size": 16}, seed=0, out_dir=root / "rine",
               backbone_card=root / "clip" / "card.json", preprocess=pre, test_crop=test_crop)  # fmt: skip
    score_rine(
        root / "rine", tiny_dataset["manifests"][1], feats["none"][1], "rine", root / "s.parquet"
    )
    scored = pd.read_parquet(root / "s.parquet").merge(
        pd.read_parquet(tiny_dataset["manifests"][1]), on="image_id"
    )
    out = tmp_path / "preds.csv"
    assert main(["predict", "--model", str(root / "rine"), str(root / "raw" / "fake"), "--output", str(out),
                 "--quiet"]) == 0  # fmt: skip
    preds = pd.read_csv(out)
    assert len(preds) == 60 and set(preds["verdict"]) <= {"real", "fake"}
    preds["source_path"] = preds["path"].map(lambda p: Path(p).name)
    both = scored.merge(preds, on="source_path")
    assert len(both) == len(scored) and np.allclose(both["p_fake_x"], both["p_fake_y"], atol=1e-5)
    # another backbone is refused by its content hash
    backbone_step(
        {**TINY_CLIP, "tiny": {**TINY_CLIP["tiny"], "layers": 2}}, seed=1, out_dir=root / "other"
    )
    capsys.readouterr()
    args = [
        "predict",
        "--model",
        str(root / "rine"),
        "--backbone",
        str(root / "other"),
        str(root / "raw"),
    ]
    assert main(args) == 2 and "not the CLIP backbone" in capsys.readouterr().err


def test_online_training_draws_a_fresh_view_every_epoch(tiny_dataset):
    from sidflow.train.rine import OnlineViews

    root = tiny_dataset["root"]
    backbone_step(TINY_CLIP, seed=0, out_dir=root / "clip")
    none = []
    for man, proc in zip(tiny_dataset["manifests"], tiny_dataset["processed"], strict=True):
        out = root / "f" / Path(man).stem / "none.parquet"
        build_clip_features(root / "clip", man, proc, out, cache_root=root / "features", seed=0)
        none.append(out)
    online = {
        "processed": tiny_dataset["processed"],
        "augment": {"blur_prob": 1.0, "jpeg_prob": 1.0},
    }
    meta = train_rine(tiny_dataset["manifests"], {"none": none}, none,
                      {"nproj": 1, "proj_dim": 16, "epochs": 2, "batch_size": 16}, seed=0, out_dir=root / "rine",
                      backbone_card=root / "clip" / "card.json", online=online)  # fmt: skip
    assert meta["views"] == ["online"] and len(meta["history"]) == 2
    man = pd.concat([pd.read_parquet(m) for m in tiny_dataset["manifests"]])
    train = man[man["split"] == "train"].reset_index(drop=True)
    views = OnlineViews(train, tiny_dataset["manifests"], tiny_dataset["processed"], root / "clip",
                        online["augment"], seed=0, device="cpu")  # fmt: skip
    idx = np.arange(6)
    e0, e0_again, e1 = views.tokens(idx, 0), views.tokens(idx, 0), views.tokens(idx, 1)
    assert e0.shape == (6, 3, 32) and np.array_equal(e0, e0_again) and not np.allclose(e0, e1)
