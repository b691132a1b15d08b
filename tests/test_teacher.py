"""Captioning teacher: registry, loss goes down, caption scoring is a valid distribution."""

import pytest
import torch

from sidflow.models import TEACHERS, TeacherConfig, create_teacher, load_teacher
from sidflow.models.vitgpt2 import build_word_tokenizer

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
