"""Student, distillation loss terms and training from the cache only."""

import pytest
import torch

from sidflow.models import StudentConfig, create_student
from sidflow.train.distill_loss import DistillationLoss, teacher_mixture


@pytest.mark.parametrize(("stem", "size"), [("cifar-maxpool", 32), ("cifar", 32), ("imagenet", 64)])
def test_student_shapes(stem, size):
    m = create_student("resnet18", StudentConfig(stem=stem, image_size=size))
    out = m(torch.randn(2, 3, size, size))
    assert out["logits"].shape == (2, 2) and out["features"].shape == (2, 512)


def test_unknown_stem_and_student():
    with pytest.raises(ValueError, match="stem"):
        create_student("resnet18", StudentConfig(stem="weird"))
    with pytest.raises(KeyError):
        create_student("vgg99")


def test_loss_terms():
    logits = torch.randn(4, 2, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1])
    same = torch.softmax(logits.detach() / 2.0, 1)
    terms = DistillationLoss(alpha=1.0, temperature=2.0)(logits, y, same)
    assert set(terms) == {
        "loss",
        "task_loss",
        "kd_loss",
        "feat_loss",
        "object_loss",
        "generator_loss",
    }
    assert terms["feat_loss"] == 0  # beta = 0: no alignment term
    assert terms["kd_loss"].abs() < 1e-6  # student already equals the teacher mixture
    other = torch.tensor([[0.9, 0.1]] * 4)
    terms = DistillationLoss(alpha=0.5, temperature=2.0)(logits, y, other)
    assert terms["kd_loss"] > 0 and terms["task_loss"] > 0
    assert torch.isclose(terms["loss"], terms["task_loss"] + 0.5 * terms["kd_loss"])
    terms["loss"].backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert DistillationLoss(0.0, 2.0)(logits, y, other)["kd_loss"] == 0


def test_teacher_mixture_weights_and_missing_rows():
    import pandas as pd

    a = pd.DataFrame(
        {"image_id": ["x", "y"], "logit_real": [0.0, 0.0], "logit_fake": [10.0, -10.0]}
    )
    b = pd.DataFrame({"image_id": ["x", "y"], "logit_real": [10.0, 10.0], "logit_fake": [0.0, 0.0]})
    mix = teacher_mixture({"a": a, "b": b}, ["x", "y"], {"a": 3.0, "b": 1.0}, t=1.0)
    assert mix.shape == (2, 2) and abs(mix.sum(1) - 1).max() < 1e-6
    assert mix[0, 1] == pytest.approx(0.75, abs=1e-3)
    with pytest.raises(ValueError, match="not in its cache"):
        teacher_mixture({"a": a}, ["x", "z"], {}, 1.0)


def test_feature_alignment_term_reaches_the_student():
    from sidflow.models import StudentConfig, create_student

    torch.manual_seed(0)
    student = create_student("resnet18", StudentConfig(image_size=32))
    crit = DistillationLoss(
        alpha=0.0, temperature=2.0, beta=1.0, feature_dim=512, teacher_dims={"a": 16, "b": 8}
    )
    out = student(torch.randn(4, 3, 32, 32))
    emb = {"a": torch.randn(4, 16), "b": torch.randn(4, 8)}
    terms = crit(out["logits"], torch.tensor([0, 1, 0, 1]), None, out["features"], emb)
    assert 0 < terms["feat_loss"] <= 2  # 1 - cosine lies in [0, 2]
    assert torch.isclose(terms["loss"], terms["task_loss"] + terms["feat_loss"])
    terms["loss"].backward()
    assert student.backbone.conv1.weight.grad.abs().sum() > 0
    assert crit.projections["a"].weight.grad is not None
    aligned = crit(out["logits"].detach(), torch.tensor([0, 1, 0, 1]), None, out["features"].detach(),
                   {k: crit.projections[k](out["features"].detach()).detach() for k in emb})  # fmt: skip
    assert aligned["feat_loss"].abs() < 1e-5  # perfectly aligned features cost nothing


def test_extra_heads_shapes_and_losses():
    torch.manual_seed(0)
    cfg = StudentConfig(
        image_size=32, object_classes=["cat", "dog", "ship"], generators=["real", "a/x", "a/y"]
    )
    student = create_student("resnet18", cfg)
    out = student(torch.randn(4, 3, 32, 32))
    assert out["object_logits"].shape == (4, 3) and out["generator_logits"].shape == (4, 3)
    crit = DistillationLoss(0.0, 2.0, object_weight=0.5, generator_weight=0.25)
    y, obj, gen = (
        torch.tensor([0, 1, 0, 1]),
        torch.tensor([0, -1, 2, 1]),
        torch.tensor([0, 1, 0, 2]),
    )
    terms = crit(out["logits"], y, None, out["features"], None, out, obj, gen)
    assert terms["object_loss"] > 0 and terms["generator_loss"] > 0
    expected = terms["task_loss"] + 0.5 * terms["object_loss"] + 0.25 * terms["generator_loss"]
    assert torch.isclose(terms["loss"], expected)
    terms["loss"].backward()
    assert student.object_head.weight.grad.abs().sum() > 0
    assert student.generator_head.weight.grad.abs().sum() > 0
    # unknown object classes only: the term is zero, not NaN, and the graph still holds
    none = crit(out["logits"].detach(), y, None, None, None,
                {k: v.detach().requires_grad_() for k, v in out.items()}, torch.full((4,), -1), gen)  # fmt: skip
    assert none["object_loss"] == 0 and torch.isfinite(none["loss"])


def test_mixture_weightings():
    import pandas as pd

    # teacher a: confident and right on x (fake), confident and wrong on y (real)
    a = pd.DataFrame({"image_id": ["x", "y"], "logit_real": [0.0, 0.0], "logit_fake": [5.0, 5.0]})
    # teacher b: unsure on both
    b = pd.DataFrame({"image_id": ["x", "y"], "logit_real": [0.0, 0.0], "logit_fake": [0.0, 0.0]})
    caches, ids, labels = {"a": a, "b": b}, ["x", "y"], [1, 0]
    fixed = teacher_mixture(caches, ids, {}, 1.0)
    conf = teacher_mixture(caches, ids, {}, 1.0, "confidence")
    corr = teacher_mixture(caches, ids, {}, 1.0, "correctness", labels)
    assert fixed[0, 1] == pytest.approx(fixed[1, 1])  # fixed ignores the image
    assert conf[0, 1] > fixed[0, 1]  # the confident teacher counts more
    assert (
        corr[1, 1] < fixed[1, 1] and corr[0, 1] > fixed[0, 1]
    )  # a is wrong on y: down-weighted there
    for m in (fixed, conf, corr):
        assert abs(m.sum(1) - 1).max() < 1e-6
    with pytest.raises(ValueError, match="labels"):
        teacher_mixture(caches, ids, {}, 1.0, "correctness")
    with pytest.raises(ValueError, match="weighting"):
        teacher_mixture(caches, ids, {}, 1.0, "vibes")


def test_knowledge_adjustment_swaps_only_wrong_mixtures():
    import pandas as pd

    # x: fake, teachers say fake (right); y: real, teachers say fake (wrong)
    a = pd.DataFrame({"image_id": ["x", "y"], "logit_real": [0.0, 0.0], "logit_fake": [2.0, 1.0]})
    ids, labels = ["x", "y"], [1, 0]
    plain = teacher_mixture({"a": a}, ids, {}, 1.0)
    adj = teacher_mixture({"a": a}, ids, {}, 1.0, labels=labels, adjust="swap")
    assert adj[0].tolist() == plain[0].tolist()  # right: untouched
    assert adj[1].tolist() == plain[1][::-1].tolist() and adj[1].argmax() == 0  # wrong: swapped
    with pytest.raises(ValueError, match="labels"):
        teacher_mixture({"a": a}, ids, {}, 1.0, adjust="swap")
    with pytest.raises(ValueError, match="adjustment"):
        teacher_mixture({"a": a}, ids, {}, 1.0, labels=labels, adjust="flip")


def test_balanced_epoch_is_balanced_and_replayable():
    import numpy as np

    from sidflow.train.common import balanced_epoch

    labels = np.array([0] * 30 + [1] * 10)
    a, b = balanced_epoch(labels, 3, 0), balanced_epoch(labels, 3, 0)
    assert (a == b).all() and not (a == balanced_epoch(labels, 3, 1)).all()
    assert len(a) == 40 and (labels[a] == 1).sum() == 20
    assert len(set(a[labels[a] == 0])) == 20  # majority class drawn without replacement
    with pytest.raises(ValueError, match="both classes"):
        balanced_epoch(np.zeros(5, int), 0, 0)


def test_precision_resolution():
    from sidflow.devices import amp_dtype, cpu_has_bf16

    cpu = torch.device("cpu")
    assert amp_dtype(cpu, "fp32") is None and amp_dtype(cpu, "bf16") == torch.bfloat16
    assert amp_dtype(cpu, "auto") == (torch.bfloat16 if cpu_has_bf16() else None)
    with pytest.raises(ValueError, match="CUDA"):
        amp_dtype(cpu, "fp16")
    with pytest.raises(ValueError, match="precision"):
        amp_dtype(cpu, "fp8")


def test_random_translate_shifts_each_image_within_its_bound():
    from sidflow.data.loading import random_translate

    torch.manual_seed(0)
    x = torch.rand(16, 3, 12, 10)
    y = random_translate(x, 3)
    assert y.shape == x.shape
    for a, b in zip(x, y, strict=True):
        # the interior of the shifted image is the original moved by one (dy, dx) in [-3, 3]
        found = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                 if torch.equal(b[:, 3:-3, 3:-3], a[:, 3 + dy : 9 + dy, 3 + dx : 7 + dx])]  # fmt: skip
        assert len(found) >= 1
    assert not torch.equal(y, x)  # 16 images: some shift is non-zero
    torch.manual_seed(0)
    x2 = torch.rand(16, 3, 12, 10)
    assert torch.equal(random_translate(x2, 3), y)  # drawn from the seeded torch RNG
    with pytest.raises(ValueError, match="translate=10 pixels"):
        random_translate(x, 10)
