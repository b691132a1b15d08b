"""BLIP-2 captioning teacher (``Blip2ForConditionalGeneration``), fine-tuned with LoRA.

Real checkpoint: ``Salesforce/blip2-opt-2.7b`` (Hugging Face id with the cache filled and
``HF_HUB_OFFLINE=1``, or a local folder); LoRA adapters on the language model's q/v
projections and optionally the Q-Former's query/value (``lora`` in config), bf16 or 8-bit.
The embedded default ``tiny`` builds the same classes (vision encoder, Q-Former, OPT
decoder) at toy size with a word-level tokenizer that includes the ``<image>`` token.

BLIP-2 only sees the image through ``num_query_tokens`` ``<image>`` placeholders at the
start of ``input_ids`` whose embeddings are replaced by the Q-Former outputs
(``image_token_index``); without them the image is silently ignored, so every
sequence here is built by :meth:`Blip2Teacher.sequence`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from sidflow.models.lora import add_lora
from sidflow.models.teachers import CaptionTeacher, TeacherConfig, register_teacher
from sidflow.models.vitgpt2 import build_word_tokenizer

IMAGE_TOKEN = "<image>"


def _tiny_config(cfg: TeacherConfig, tokenizer):
    from transformers import Blip2Config, OPTConfig

    t = cfg.tiny
    h = t["hidden_size"]
    q = int(t.get("query_tokens", 8))
    text = OPTConfig(
        vocab_size=len(tokenizer), hidden_size=h, num_hidden_layers=t["layers"], ffn_dim=4 * h,
        num_attention_heads=t["heads"], max_position_embeddings=q + cfg.max_caption_tokens + 4,
        word_embed_proj_dim=h, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return Blip2Config(
        vision_config={"hidden_size": h, "intermediate_size": 4 * h, "num_hidden_layers": t["layers"],
                       "num_attention_heads": t["heads"], "image_size": cfg.image_size,
            # the vision tower's default initializer_range is 1e-10 (it is always loaded
            # pretrained); from scratch that would erase the image signal
            "initializer_range": 0.02, "patch_size": t["patch_size"]},
        qformer_config={"hidden_size": h, "num_hidden_layers": t["layers"], "num_attention_heads": t["heads"],
                        "intermediate_size": 4 * h, "encoder_hidden_size": h, "vocab_size": 8,
                        "max_position_embeddings": 16},
        text_config=text.to_dict(),
        num_query_tokens=q,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )  # fmt: skip


def _precision_kwargs(precision: str) -> dict:
    if precision == "bf16":
        return {"dtype": torch.bfloat16}
    if precision == "8bit":
        from transformers import BitsAndBytesConfig

        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "device_map": "auto"}
    return {}


@register_teacher("blip2")
class Blip2Teacher(CaptionTeacher):
    image_mean = 0.5
    image_std = 0.5

    @classmethod
    def build(cls, cfg: TeacherConfig) -> Blip2Teacher:
        from transformers import AutoTokenizer, Blip2ForConditionalGeneration

        if cfg.checkpoint == "tiny":
            tokenizer = build_word_tokenizer(cfg.captions, extra_special=[IMAGE_TOKEN])
            model = Blip2ForConditionalGeneration(_tiny_config(cfg, tokenizer))
            # Built from scratch, the query tokens start at zero: identical queries that
            # layer-normalise to nothing. Pretrained checkpoints learned them; here they
            # get the Q-Former's usual normal initialisation.
            torch.nn.init.normal_(
                model.query_tokens, std=model.config.qformer_config.initializer_range
            )
        else:
            model = Blip2ForConditionalGeneration.from_pretrained(
                cfg.checkpoint, **_precision_kwargs(cfg.precision)
            )
            tokenizer = AutoTokenizer.from_pretrained(cfg.checkpoint)
            if model.config.image_token_index is None:
                raise ValueError(f"{cfg.checkpoint}: image_token_index is not set; use a checkpoint "
                                 "whose processor expands <image> tokens (transformers >= 4.47 format)")  # fmt: skip
        if cfg.lora.get("enabled", cfg.checkpoint != "tiny"):
            keep = cfg.lora.get("modules_to_save", [])
            model = add_lora(model, cfg.lora, "language_model", "qformer", modules_to_save=keep)
        return cls(cfg, model, tokenizer)

    @classmethod
    def load(cls, cfg: TeacherConfig, model_dir: Path) -> Blip2Teacher:
        from transformers import Blip2ForConditionalGeneration, PreTrainedTokenizerFast

        model_dir = Path(model_dir)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir / "tokenizer")
        if (model_dir / "model" / "adapter_config.json").exists():
            from peft import PeftModel

            base = Blip2ForConditionalGeneration.from_pretrained(
                cfg.checkpoint, **_precision_kwargs(cfg.precision)
            )
            model = PeftModel.from_pretrained(base, model_dir / "model").merge_and_unload()
        else:
            model = Blip2ForConditionalGeneration.from_pretrained(
                model_dir / "model", use_safetensors=True
            )
        return cls(cfg, model, tokenizer)

    # -- sequences -------------------------------------------------------------
    @property
    def _config(self):
        return (
            self.model.config
            if not hasattr(self.model, "get_base_model")
            else self.model.get_base_model().config
        )

    def prefix_ids(self) -> list[int]:
        c = self._config
        return [c.image_token_index] * c.num_query_tokens + [self.tokenizer.bos_token_id]

    def sequence(self, cls: str) -> tuple[list[int], int]:
        """input_ids for one class caption and where the caption starts."""
        prefix = self.prefix_ids()
        return prefix + self.caption_ids(cls), len(prefix)

    def collate(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> dict:
        seqs = [self.sequence(self.class_names[int(y)]) for y in labels]
        width = max(len(s) for s, _ in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        lab = torch.full_like(ids, -100)
        for i, (s, start) in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
            lab[i, start : len(s)] = torch.tensor(s[start:])
        dev = pixel_values.device
        return {
            "pixel_values": pixel_values,
            "input_ids": ids.to(dev),
            "attention_mask": mask.to(dev),
            "labels": lab.to(dev),
        }

    # -- scoring primitives ----------------------------------------------------
    def encode(self, pixel_values: torch.Tensor):
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return base.get_image_features(pixel_values, return_dict=True)

    def _logits(self, enc, ids: torch.Tensor) -> torch.Tensor:
        return self.model(
            pixel_values=None, mm_encoder_outputs={"image": enc}, input_ids=ids
        ).logits

    def caption_logprob(self, enc, cls: str) -> torch.Tensor:
        n = enc.pooler_output.shape[0]
        seq, start = self.sequence(cls)
        ids = torch.tensor(seq, device=enc.pooler_output.device).expand(n, -1)
        logp = F.log_softmax(self._logits(enc, ids).float(), dim=-1)
        target = ids[:, start:]
        pred = logp[:, start - 1 : -1]
        return pred.gather(2, target.unsqueeze(-1)).squeeze(-1).sum(dim=1)

    def caption_start(self, enc, n: int) -> torch.Tensor:
        return (
            torch.tensor(self.prefix_ids(), device=enc.pooler_output.device).expand(n, -1).clone()
        )

    def next_token_logits(self, enc, ids: torch.Tensor) -> torch.Tensor:
        return self._logits(enc, ids)[:, -1]

    def embedding(self, enc) -> torch.Tensor:
        return enc.pooler_output.mean(dim=1)
