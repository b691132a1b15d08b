"""Captioning teachers: a registry, a factory and the scoring they share.

A teacher is a vision-language model fine-tuned to caption an image with the
"real" or the "fake" caption template. Its detection score is not the word it
generates but the teacher-forced log-likelihood of each class caption: the pair
(log p(real caption), log p(fake caption)) is stored as its 2-class logits, and
``p_fake = softmax(logits)[1]``.

    teacher = create_teacher("vitgpt2", TeacherConfig(checkpoint="tiny"))
    out = teacher.score(pixel_values)   # logits (N,2), embedding (N,D), captions
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sidflow.registry import TEACHERS


@dataclass
class TeacherConfig:
    """What a teacher is made of. ``checkpoint`` is ``tiny`` (built here, trained from
    scratch), a Hugging Face id (loaded from the local cache when offline) or a folder."""

    arch: str = "vitgpt2"
    checkpoint: str = "tiny"
    image_size: int = 32
    captions: dict[str, str] = field(default_factory=lambda: {"real": "real", "fake": "fake"})
    tiny: dict = field(
        default_factory=lambda: {"hidden_size": 64, "layers": 2, "heads": 4, "patch_size": 4}
    )
    max_caption_tokens: int = 8
    precision: str = "fp32"  # fp32 | bf16 | 8bit (8-bit needs bitsandbytes and a GPU)
    lora: dict = field(
        default_factory=dict
    )  # {enabled, r, alpha, dropout, language_model, qformer}


def teacher_config_from_settings(settings: dict, image_size: int) -> TeacherConfig:
    """A TeacherConfig from one ``teachers.<name>`` block of the validated config."""
    keys = ("arch", "checkpoint", "captions", "tiny", "precision", "max_caption_tokens", "lora")
    kwargs = {k: settings[k] for k in keys if k in settings}
    return TeacherConfig(image_size=image_size, **kwargs)


def register_teacher(name: str):
    """Class decorator: register a :class:`CaptionTeacher` subclass as ``name``."""

    def wrap(cls):
        cls.name = name
        return TEACHERS.register(name, cls)

    return wrap


class CaptionTeacher:
    """Common scoring over a seq2seq captioner; subclasses build/load the model."""

    name = "base"
    image_mean: float = 0.5
    image_std: float = 0.5

    def __init__(self, cfg: TeacherConfig, model, tokenizer):
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.class_names = ["real", "fake"]

    # -- captions ------------------------------------------------------------
    def caption_ids(self, cls: str) -> list[int]:
        ids = self.tokenizer(self.cfg.captions[cls], add_special_tokens=False)["input_ids"]
        return list(ids) + [self.tokenizer.eos_token_id]

    def label_tensor(self, labels: torch.Tensor) -> torch.Tensor:
        """Caption token targets for labels (0 real, 1 fake), padded with -100."""
        seqs = [self.caption_ids(self.class_names[int(y)]) for y in labels]
        width = max(len(s) for s in seqs)
        out = torch.full((len(seqs), width), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s)
        return out.to(labels.device)

    # -- training ------------------------------------------------------------
    def collate(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> dict:
        """Model keyword arguments (with ``labels``) for a batch of images and class labels."""
        return {"pixel_values": pixel_values, "labels": self.label_tensor(labels)}

    def loss(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.model(**self.collate(pixel_values, labels)).loss

    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    # -- scoring -------------------------------------------------------------
    def encode(self, pixel_values: torch.Tensor):
        raise NotImplementedError

    def caption_logprob(self, encoded, cls: str) -> torch.Tensor:
        raise NotImplementedError

    def caption_start(self, encoded, n: int) -> torch.Tensor:
        """Token ids every generated caption starts from (n x k)."""
        raise NotImplementedError

    def next_token_logits(self, encoded, ids: torch.Tensor) -> torch.Tensor:
        """Logits of the token after ``ids`` (n x vocab)."""
        raise NotImplementedError

    def greedy_captions(self, encoded, n: int) -> list[str]:
        """Greedy decoding from :meth:`caption_start`, at most ``max_caption_tokens``."""
        ids = self.caption_start(encoded, n)
        start = ids.shape[1]
        done = torch.zeros(n, dtype=torch.bool, device=ids.device)
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        for _ in range(self.cfg.max_caption_tokens):
            nxt = self.next_token_logits(encoded, ids).argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == eos
            if bool(done.all()):
                break
        return [
            s.strip() for s in self.tokenizer.batch_decode(ids[:, start:], skip_special_tokens=True)
        ]

    def embedding(self, encoded) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def score(self, pixel_values: torch.Tensor) -> dict:
        """Teacher-forced class-caption log-likelihoods, p_fake, embedding, greedy caption."""
        self.model.eval()
        enc = self.encode(pixel_values)
        logits = torch.stack([self.caption_logprob(enc, c) for c in self.class_names], dim=1)
        return {
            "logits": logits.float(),
            "p_fake": torch.softmax(logits.float(), dim=1)[:, 1],
            "embedding": self.embedding(enc).float(),
            "captions": self.greedy_captions(enc, pixel_values.shape[0]),
        }

    def caption_to_class(self, caption: str) -> str | None:
        """Which class a generated caption names, or None if it is neither."""
        text = caption.strip().lower()
        for cls in self.class_names:
            if text == self.cfg.captions[cls].strip().lower():
                return cls
        return None

    # -- persistence ---------------------------------------------------------
    def save(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        model = self.model
        if hasattr(model, "merge_and_unload") and self.cfg.checkpoint == "tiny":
            model = model.merge_and_unload()  # a tiny base is random: keep the merged weights
        model.save_pretrained(out_dir / "model")
        self.tokenizer.save_pretrained(out_dir / "tokenizer")
        (out_dir / "teacher.json").write_text(
            json.dumps({"name": self.name, "config": asdict(self.cfg)}, indent=2)
        )


def create_teacher(name: str, cfg: TeacherConfig | dict | None = None) -> CaptionTeacher:
    """Build a teacher by registry name (``vitgpt2``) from a config."""
    cls = TEACHERS.get(name)
    if isinstance(cfg, dict):
        cfg = TeacherConfig(**cfg)
    return cls.build(cfg or TeacherConfig(arch=name))


def load_teacher(model_dir: str | Path) -> CaptionTeacher:
    """Load a fine-tuned teacher saved by :meth:`CaptionTeacher.save` (safetensors only)."""
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "teacher.json").read_text())
    cfg = TeacherConfig(**meta["config"])
    return TEACHERS.get(meta["name"]).load(cfg, model_dir)
