"""The LLaVA-family explainer (tiny SigLIP + Phi, built offline): prompts and image tokens,
labels on the answer only, the image reaching the language model, the detector score, LoRA
fine-tuning, save/load, and the conversation files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import SHARED
from sidflow.data.archive import extract
from sidflow.models.explainer import (
    IMAGE_TOKEN,
    TRUE_FALSE_QUESTION,
    Explainer,
    ExplainerCheckpointNotFoundError,
    ExplainerConfig,
)
from sidflow.registry import EXPLAINERS
from sidflow.train.explainer import (
    finetune_explainer,
    load_conversations,
    template_conversations,
    true_false_conversations,
)

pytestmark = pytest.mark.models

VQA_ZIP = SHARED / "datasets" / "aigen-vqa" / "aigen-vqa.zip"
QUESTION = (
    "Do you think this image is real or artificially generated? Please explain your reasoning."
)
ANSWERS = [
    "Fake. The snake has no head and its body makes a full circle.",
    "Real. This is a photograph of a dog on grass.",
    "Fake. The lobsters have a different number of arms.",
    "Real. The shadows and reflections are consistent.",
]


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


def _write_conversations(folder, n: int = 4, missing: str | None = None):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for i, im in enumerate(_images(n)):
        rid = f"rec{i}"
        if rid != missing:
            im.save(folder / "images" / f"{rid}.png")
        entries.append({
            "id": rid, "image": f"images/{rid}.png",
            "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n{QUESTION}"},
                              {"from": "gpt", "value": ANSWERS[i % len(ANSWERS)]}],
            "metadata": {"generator": "midjourney", "object_category": "snake"},
        })  # fmt: skip
    path = folder / "conversations.json"
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture(scope="module")
def explainer() -> Explainer:
    """Built once, read-only (tests that change it build their own)."""
    return Explainer.build(ExplainerConfig(), [QUESTION, *ANSWERS])


def test_prompt_has_one_image_marker_expanded_to_the_patch_tokens(explainer):
    cfg = explainer.cfg
    prompt = explainer.prompt(QUESTION)
    assert prompt.count(IMAGE_TOKEN) == 1 and prompt.startswith("USER: <image>\n")
    assert prompt.endswith("ASSISTANT:")
    assert explainer.prompt(QUESTION, "Fake.").endswith("ASSISTANT: Fake.</s>")
    batch = explainer.inputs(_images(2), [QUESTION, "Why?"])
    n_img = (cfg.image_size // cfg.patch_size) ** 2
    assert ((batch["input_ids"] == explainer.image_token_id).sum(1) == n_img).all()
    assert batch["pixel_values"].shape == (2, 3, cfg.image_size, cfg.image_size)
    assert EXPLAINERS.get("llava") is Explainer


def test_the_image_reaches_the_language_model(explainer):
    a, b = _images(2)
    logits = explainer.next_token_logits([a, b, a], [QUESTION] * 3)
    assert not torch.allclose(logits[0], logits[1])
    torch.testing.assert_close(logits[0], logits[2], rtol=0, atol=0)
    # a left-padded row scores as it would alone
    alone = explainer.next_token_logits([a], [QUESTION])
    mixed = explainer.next_token_logits([b, a], ["Why?", QUESTION])
    torch.testing.assert_close(mixed[1], alone[0], rtol=1e-4, atol=1e-5)


def test_labels_cover_the_answer_tokens_only(explainer):
    answers = [ANSWERS[0], "Real."]
    batch = explainer.inputs(_images(2), [QUESTION, "Why?"], answers)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    tok = explainer.tokenizer
    for i, answer in enumerate(answers):
        answer_ids = tok(answer + tok.eos_token, add_special_tokens=False)["input_ids"]
        on = labels[i] != -100
        assert on.sum() == len(answer_ids)
        assert labels[i][on].tolist() == answer_ids == ids[i][on].tolist()
        assert (labels[i][mask[i] == 0] == -100).all()
        assert (labels[i][ids[i] == explainer.image_token_id] == -100).all()
        assert ids[i][on][-1] == tok.eos_token_id and on[-1]  # left padding: answer at the end


def test_fake_probability_is_a_probability_per_image(explainer):
    p = explainer.fake_probability(_images(3))
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    assert explainer.answer_token_id("Fake") != explainer.answer_token_id("Real")


def test_finetuning_trains_lora_and_projector_only_then_merges(tmp_path):
    records = load_conversations(_write_conversations(tmp_path))
    ex = Explainer.build(ExplainerConfig(), [r["question"] + " " + r["answer"] for r in records])
    before = {k: v.clone() for k, v in ex.model.state_dict().items()}
    messages = []
    result = finetune_explainer(ex, records, epochs=6, lr=5e-3, batch_size=2, seed=0,
                                log=messages.append)  # fmt: skip
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 6 and losses[0] > losses[-1]
    assert result["steps"] == 12 and 0 < result["trainable_params"] < result["total_params"]
    assert any("images/s" in m for m in messages)
    after = ex.model.state_dict()
    assert set(after) == set(before)  # merged: no LoRA keys left
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("multi_modal_projector" in k or "language_model" in k for k in changed)
    assert any("multi_modal_projector" in k for k in changed)
    assert all(
        k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed if "language_model" in k
    )
    assert not any("vision_tower" in k for k in changed)
    assert type(ex.model).__name__ == "LlavaForConditionalGeneration"
    assert not any("lora" in type(m).__name__.lower() for m in ex.model.modules())
    # deterministic under the seed
    ex2 = Explainer.build(ExplainerConfig(), [r["question"] + " " + r["answer"] for r in records])
    again = finetune_explainer(ex2, records, epochs=1, lr=5e-3, batch_size=2, seed=0, max_steps=1)
    ex3 = Explainer.build(ExplainerConfig(), [r["question"] + " " + r["answer"] for r in records])
    once = finetune_explainer(ex3, records, epochs=1, lr=5e-3, batch_size=2, seed=0, max_steps=1)
    assert again["history"] == once["history"] and again["steps"] == 1
    for k, v in ex2.model.state_dict().items():
        torch.testing.assert_close(v, ex3.model.state_dict()[k], rtol=0, atol=0)


def test_save_and_load_give_the_same_answers_and_logits(explainer, tmp_path):
    images = _images(2, seed=3)
    questions = [QUESTION, TRUE_FALSE_QUESTION]
    explainer.save(tmp_path / "ex")
    loaded = Explainer.load(tmp_path / "ex")
    assert (tmp_path / "ex" / "model.safetensors").exists()
    assert loaded.cfg == explainer.cfg
    assert loaded.answer(images, questions, max_new_tokens=6) == explainer.answer(
        images, questions, max_new_tokens=6
    )
    torch.testing.assert_close(
        loaded.next_token_logits(images, questions),
        explainer.next_token_logits(images, questions), rtol=0, atol=0,
    )  # fmt: skip


def test_load_conversations_resolves_images_and_strips_the_marker(tmp_path):
    records = load_conversations(_write_conversations(tmp_path))
    assert [r["id"] for r in records] == ["rec0", "rec1", "rec2", "rec3"]
    for r in records:
        assert r["image"].is_absolute() and r["image"].is_file()
        assert IMAGE_TOKEN not in r["question"] and r["question"] == QUESTION
        assert r["generator"] == "midjourney" and r["object_category"] == "snake"
    assert records[1]["answer"] == ANSWERS[1]


def test_load_conversations_names_the_file_and_the_record(tmp_path):
    path = _write_conversations(tmp_path, missing="rec2")
    with pytest.raises(ValueError, match=r"conversations\.json.*'rec2'"):
        load_conversations(path)
    entries = json.loads(path.read_text())
    del entries[1]["conversations"]
    path.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"conversations\.json: malformed record 'rec1'"):
        load_conversations(path)


def test_template_conversations_are_written_from_labels(tmp_path):
    rows = [
        {"path": tmp_path / "a.png", "label": 1, "generator": "glide", "object_class": "cat"},
        {"path": tmp_path / "b.png", "label": 0, "generator": "real", "object_class": "dog"},
    ]
    recs = template_conversations(rows, gradcam_regions={str(tmp_path / "a.png"): "upper left"})
    assert recs[0]["answer"].startswith("Fake. This image was generated by glide")
    assert "attention is on the upper left" in recs[0]["answer"]
    assert recs[1]["answer"] == "Real. This is a photograph of dog."
    tf = true_false_conversations(recs, [1, 0])
    assert [r["answer"] for r in tf] == ["Fake", "Real"] and tf[0][
        "question"
    ] == TRUE_FALSE_QUESTION


def test_a_checkpoint_missing_from_the_cache_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = ExplainerConfig(checkpoint="sidflow-tests/no-such-llava-checkpoint", allow_download=True)
    with pytest.raises(ExplainerCheckpointNotFoundError, match="no-such-llava-checkpoint.*HF_HOME"):
        Explainer.build(cfg)
    assert issubclass(ExplainerCheckpointNotFoundError, FileNotFoundError)


@pytest.mark.data  # reads ../shared, as test_vqa's shared-data test
def test_the_shipped_finetuning_conversations_load(tmp_path):
    if not VQA_ZIP.exists():
        pytest.skip("../shared/datasets/aigen-vqa is absent (outside this workplace)")
    extract(VQA_ZIP, tmp_path, prefix="aigen-vqa/finetune/")
    records = load_conversations(tmp_path / "conversations.json")
    assert len(records) == 99 and all(r["image"].is_file() for r in records)
    assert all(IMAGE_TOKEN not in r["question"] and r["answer"] for r in records)
