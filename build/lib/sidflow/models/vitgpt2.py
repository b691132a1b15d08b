"""ViT-GPT2 captioning teacher (``VisionEncoderDecoderModel``).

Real checkpoint: ``nlpconnect/vit-gpt2-image-captioning`` (set ``checkpoint`` to the
id with the Hugging Face cache filled, ``HF_HUB_OFFLINE=1``, or to a local folder).
The embedded default ``tiny`` builds the same classes (ViTModel encoder, GPT2
decoder with cross-attention) at a few layers and hidden size 64, with a
word-level tokenizer built offline from the caption templates.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from sidflow.models.teachers import CaptionTeacher, TeacherConfig, register_teacher

SPECIAL = {"pad_token": "[PAD]", "bos_token": "[BOS]", "eos_token": "[EOS]", "unk_token": "[UNK]"}


def build_word_tokenizer(captions: dict[str, str], extra_special: list[str] | None = None):
    """A word-level ``PreTrainedTokenizerFast`` whose vocabulary is the caption words
    (plus ``extra_special`` tokens such as BLIP-2's ``<image>``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in captions.values() for w in text.lower().split()})
    extra = list(extra_special or [])
    vocab = {tok: i for i, tok in enumerate(list(SPECIAL.values()) + extra + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
    if extra:
        fast.add_special_tokens({"additional_special_tokens": extra})
    return fast


@register_teacher("vitgpt2")
class VitGpt2Teacher(CaptionTeacher):
    @classmethod
    def build(cls, cfg: TeacherConfig) -> VitGpt2Teacher:
        from transformers import AutoTokenizer, VisionEncoderDecoderModel

        if cfg.checkpoint != "tiny":
            model = VisionEncoderDecoderModel.from_pretrained(cfg.checkpoint)
            tokenizer = AutoTokenizer.from_pretrained(cfg.checkpoint)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model.config.pad_token_id = tokenizer.pad_token_id
            model.config.decoder_start_token_id = tokenizer.bos_token_id
            return cls(cfg, model, tokenizer)
        return cls(
            cfg,
            cls._tiny_model(cfg, build_word_tokenizer(cfg.captions)),
            build_word_tokenizer(cfg.captions),
        )

    @staticmethod
    def _tiny_model(cfg: TeacherConfig, tokenizer):
        from transformers import (
            GPT2Config,
            GPT2LMHeadModel,
            VisionEncoderDecoderModel,
            ViTConfig,
            ViTModel,
        )

        t = cfg.tiny
        enc = ViTModel(
            ViTConfig(
                image_size=cfg.image_size, patch_size=t["patch_size"], hidden_size=t["hidden_size"],
                num_hidden_layers=t["layers"], num_attention_heads=t["heads"],
                intermediate_size=4 * t["hidden_size"],
            ),
            add_pooling_layer=False,
        )  # fmt: skip
        dec = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=len(tokenizer), n_positions=cfg.max_caption_tokens + 2, n_embd=t["hidden_size"],
                n_layer=t["layers"], n_head=t["heads"], add_cross_attention=True, is_decoder=True,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )  # fmt: skip
        model = VisionEncoderDecoderModel(encoder=enc, decoder=dec)
        model.config.decoder_start_token_id = tokenizer.bos_token_id
        model.config.pad_token_id = tokenizer.pad_token_id
        model.config.eos_token_id = tokenizer.eos_token_id
        return model

    @classmethod
    def load(cls, cfg: TeacherConfig, model_dir: Path) -> VitGpt2Teacher:
        from transformers import PreTrainedTokenizerFast, VisionEncoderDecoderModel

        model = VisionEncoderDecoderModel.from_pretrained(model_dir / "model", use_safetensors=True)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir / "tokenizer")
        return cls(cfg, model, tokenizer)

    # -- scoring primitives ----------------------------------------------------
    def encode(self, pixel_values: torch.Tensor):
        return self.model.encoder(pixel_values=pixel_values)

    def _decoder_logits(self, enc, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(encoder_outputs=enc, decoder_input_ids=decoder_input_ids).logits

    def caption_logprob(self, enc, cls: str) -> torch.Tensor:
        n = enc.last_hidden_state.shape[0]
        target = torch.tensor(self.caption_ids(cls), device=enc.last_hidden_state.device)
        start = torch.tensor([self.model.config.decoder_start_token_id], device=target.device)
        dec_in = torch.cat([start, target[:-1]]).expand(n, -1)
        logp = F.log_softmax(self._decoder_logits(enc, dec_in).float(), dim=-1)
        return logp.gather(2, target.expand(n, -1).unsqueeze(-1)).squeeze(-1).sum(dim=1)

    def caption_start(self, enc, n: int) -> torch.Tensor:
        start = self.model.config.decoder_start_token_id
        return torch.full((n, 1), start, dtype=torch.long, device=enc.last_hidden_state.device)

    def next_token_logits(self, enc, ids: torch.Tensor) -> torch.Tensor:
        return self._decoder_logits(enc, ids)[:, -1]

    def embedding(self, enc) -> torch.Tensor:
        return enc.last_hidden_state.mean(dim=1)
