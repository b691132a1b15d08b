"""The published real-size teacher configs (src/sidflow/models/configs/*.json) build the
published architectures: checked on the meta device (no memory, no download) through the
same helpers bench/real_size_smoke.py uses for its real run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "src" / "sidflow" / "models" / "configs"


@pytest.fixture(scope="module")
def smoke():
    spec = importlib.util.spec_from_file_location(
        "real_size_smoke", REPO / "bench" / "real_size_smoke.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_configs_are_plain_json_the_bench_finds(smoke):
    for name, spec in smoke.MODELS.items():
        path = CONFIGS / spec["config"]
        assert json.loads(path.read_text())["architectures"], path
        assert smoke.config_path(name).resolve() == path.resolve()


def test_vitgpt2_is_the_published_size(smoke):
    cfg, model = smoke.load_config("vitgpt2"), smoke.meta_model("vitgpt2")
    total = smoke.count(model)
    # nlpconnect/vit-gpt2-image-captioning: ViT-base (86.4M, pooler included) + GPT-2
    # 124.4M + 12 cross-attention blocks (28.4M) = 239.2M
    assert total == pytest.approx(239.2e6, rel=0.01), total
    assert cfg.encoder.hidden_size == 768 and cfg.encoder.patch_size == 16
    assert cfg.encoder.image_size == 224
    assert cfg.decoder.vocab_size == 50257 and cfg.decoder.n_layer == 12
    assert cfg.decoder_start_token_id == 50256
    names = {n for n, _ in model.named_modules()}
    assert "decoder.transformer.h.0.attn.c_attn" in names
    assert "decoder.transformer.h.11.crossattention.c_attn" in names
    assert model.decoder.transformer.wte.weight.shape == (50257, 768)
    targets = smoke.lora_targets(model, "vitgpt2")
    assert len(targets) == 24  # self- and cross-attention c_attn in 12 blocks


def test_blip2_opt_is_the_published_size(smoke):
    cfg, model = smoke.load_config("blip2"), smoke.meta_model("blip2")
    total = smoke.count(model)
    # Salesforce/blip2-opt-2.7b: 3.74B on its model card (commonly rounded to 3.8B):
    # EVA ViT-g ~0.99B, Q-Former + projection ~0.11B, OPT-2.7B ~2.65B (tied lm_head)
    assert 3.73e9 < total < 3.76e9, total
    t, v, q = cfg.text_config, cfg.vision_config, cfg.qformer_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads) == (2560, 32, 32)
    assert (t.ffn_dim, t.vocab_size, t.max_position_embeddings) == (10240, 50272, 2048)
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads) == (1408, 39, 16)
    assert (v.intermediate_size, v.patch_size, v.image_size) == (6144, 14, 224)
    assert (q.hidden_size, q.num_hidden_layers, q.cross_attention_frequency) == (768, 12, 2)
    assert q.encoder_hidden_size == 1408
    assert cfg.num_query_tokens == 32
    assert cfg.image_token_index == 50265 < t.vocab_size
    assert model.query_tokens.shape == (1, 32, 768)
    assert model.language_projection.weight.shape == (2560, 768)
    names = {n for n, _ in model.named_modules()}
    for layer in (0, 31):
        for proj in ("q_proj", "v_proj"):
            assert f"language_model.model.decoder.layers.{layer}.self_attn.{proj}" in names
    targets = smoke.lora_targets(model, "blip2")
    assert len(targets) == 64 and sum(targets.values()) == 64 * 8 * (2560 + 2560)


def test_dry_config_mode(smoke, capsys):
    res = smoke.main(["--dry-config"])
    assert set(res["models"]) == {"vitgpt2", "blip2"}
    assert res["models"]["blip2"]["query_tokens"] == 32
    assert '"dry_config": true' in capsys.readouterr().out


def test_stand_in_tokenizers_have_the_real_ids(smoke):
    tok = smoke.stand_in_tokenizer("blip2")
    assert len(tok) == 50266 and tok.convert_tokens_to_ids("<image>") == 50265
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (1, 2, 2)
    assert tok("real", add_special_tokens=False)["input_ids"] != tok("fake")["input_ids"]
    tok = smoke.stand_in_tokenizer("vitgpt2")
    assert len(tok) == 50257 and tok.eos_token_id == tok.bos_token_id == 50256
