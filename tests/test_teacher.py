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


def test_training_lowers_loss_and_ranks_classes_on_its_batch(tmp_path):
    torch.manual_seed(0)
    t = create_teacher("vitgpt2", CFG)
    x, y = _batch()
    opt = torch.optim.AdamW(t.trainable_parameters(), lr=3e-3)
    first = t.loss(x, y).item()
    for _ in range(60):
        loss = t.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.5
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
