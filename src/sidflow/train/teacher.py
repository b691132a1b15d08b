"""Teacher fine-tuning step: teach a captioner to say "real" or "fake".

    finetune_teacher("vitgpt2", TeacherConfig(), FinetuneConfig(), manifests, processed,
                     "results/teachers/vitgpt2")

Runs the Hugging Face ``Trainer`` (``Seq2SeqTrainer`` for the encoder-decoder ViT-GPT2),
so bf16 autocast on GPUs, several GPUs (``torchrun``) and gradient accumulation come
with it. The ``train`` split of the given generators is class-balanced by resampling
with the seed; validation loss and caption-score accuracy are logged per epoch. The
model (safetensors), tokenizer and a card with the checkpoint's content hash are saved.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from sidflow.data.loading import JpegDataset, load_images
from sidflow.devices import (
    adjust_threads,
    parameter_counts,
    peak_memory_mb,
    reset_peak_memory,
    seed_everything,
    select_device,
)
from sidflow.io import atomic_dir, hash_tree, write_json
from sidflow.models.teachers import CaptionTeacher, TeacherConfig, create_teacher
from sidflow.train.common import balanced_resample
from sidflow.train.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    epochs: int = 4
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    grad_accum: int = 1
    max_train_images: int = 0  # > 0: a class-balanced random subset of the training split
    seed: int = 0
    device: str = "auto"


@torch.no_grad()
def evaluate_teacher(
    teacher: CaptionTeacher, dataset: JpegDataset, device, batch_size: int = 128
) -> dict:
    """Accuracy of p_fake >= 0.5 and how many greedy captions name neither class."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    ys, ps, unknown = [], [], 0
    was_training = teacher.model.training
    for x, y, _ in loader:
        out = teacher.score(x.to(device))
        ys.append(y.numpy())
        ps.append(out["p_fake"].cpu().numpy())
        unknown += sum(teacher.caption_to_class(c) is None for c in out["captions"])
    teacher.model.train(was_training)
    y, p = np.concatenate(ys), np.concatenate(ps)
    return {
        "accuracy": float(((p >= 0.5) == y).mean()),
        "n": int(len(y)),
        "other_captions": int(unknown),
    }


class _Items(torch.utils.data.Dataset):
    def __init__(self, base: JpegDataset, indices: np.ndarray):
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        x, y, _ = self.base[int(self.indices[i])]
        return {"pixel_values": x, "label": y}


class _Collate:
    """Batches ``_Items`` into the teacher model's keyword arguments."""

    def __init__(self, teacher: CaptionTeacher):
        self.teacher = teacher

    def __call__(self, items):
        x = torch.stack([it["pixel_values"] for it in items])
        y = torch.stack([it["label"] for it in items])
        return self.teacher.collate(x, y)


class _EpochEval(TrainerCallback):
    """Caption-score accuracy on the validation images after every epoch, into ``history``."""

    def __init__(self, name: str, teacher: CaptionTeacher, val_ds: JpegDataset):
        self.name, self.teacher, self.val_ds = name, teacher, val_ds
        self.history: list[dict] = []
        self.t0 = time.time()
        self.progress: Progress | None = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        adjust_threads()
        per_epoch = state.max_steps // max(int(args.num_train_epochs), 1)
        self.progress = Progress(f"teacher {self.name} epoch {round(state.epoch) + 1}", per_epoch)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:  # images of one optimiser step (the loss is logged per epoch)
            self.progress.update(
                args.per_device_train_batch_size * args.gradient_accumulation_steps
            )

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.close()
        dev = next(self.teacher.model.parameters()).device
        metrics = evaluate_teacher(self.teacher, self.val_ds, dev)
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        row = {"epoch": round(state.epoch), "train_loss": losses[-1] if losses else None, "val": metrics,
               "seconds": round(time.time() - self.t0, 2)}  # fmt: skip
        self.history.append(row)
        log.info("teacher %s epoch %d: %s", self.name, row["epoch"], row)
        self.t0 = time.time()


def _training_args(args_cls, train_cfg: FinetuneConfig, output_dir: str, steps: int, device):
    """The Trainer's arguments: cosine schedule with warm-up, logs once per epoch, no saving."""
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return args_cls(
        output_dir=output_dir,
        per_device_train_batch_size=train_cfg.batch_size,
        gradient_accumulation_steps=train_cfg.grad_accum,
        num_train_epochs=train_cfg.epochs,
        learning_rate=train_cfg.lr,
        weight_decay=train_cfg.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(train_cfg.warmup * steps)),
        max_grad_norm=1.0,
        logging_strategy="epoch",
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        seed=train_cfg.seed,
        data_seed=train_cfg.seed,
        use_cpu=device.type == "cpu",
        bf16=use_bf16,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def cfg_uses_lora(teacher: CaptionTeacher) -> bool:
    """Whether the teacher trains LoRA adapters (peft) rather than all its weights."""
    return hasattr(teacher.model, "peft_config")


def finetune_teacher(
    name: str,
    cfg: TeacherConfig,
    train_cfg: FinetuneConfig,
    manifests: list[str],
    processed_dirs: list[str],
    out_dir: str | Path,
) -> dict:
    from transformers import (
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        Trainer,
        TrainingArguments,
    )

    seed_everything(train_cfg.seed)
    device = select_device(train_cfg.device)
    teacher = create_teacher(name, cfg)
    train = load_images(manifests, processed_dirs, ["train"])
    val = load_images(manifests, processed_dirs, ["val"])
    mean, std = teacher.image_mean, teacher.image_std
    indices = balanced_resample(train["label"], train_cfg.seed)
    if train_cfg.max_train_images:
        indices = indices[: train_cfg.max_train_images]  # balanced_resample is already shuffled
    train_ds = _Items(JpegDataset(train["jpeg"], train["label"], mean, std, augment=True), indices)
    val_ds = JpegDataset(val["jpeg"], val["label"], mean, std)
    epoch_eval = _EpochEval(name, teacher, val_ds)
    steps = (
        int(np.ceil(len(train_ds) / (train_cfg.batch_size * train_cfg.grad_accum)))
        * train_cfg.epochs
    )
    seq2seq = teacher.model.config.is_encoder_decoder
    args_cls, trainer_cls = (
        (Seq2SeqTrainingArguments, Seq2SeqTrainer) if seq2seq else (TrainingArguments, Trainer)
    )
    log.info(
        "teacher %s (%s): %d train samples (of %d) / %d val images on %s",
        name,
        trainer_cls.__name__,
        len(train_ds),
        len(train),
        len(val),
        device,
    )
    cost = parameter_counts(teacher.model) | {"mode": "lora" if cfg_uses_lora(teacher) else "full"}
    reset_peak_memory(device)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sidflow-trainer-") as tmp:
        args = _training_args(args_cls, train_cfg, tmp, steps, device)
        trainer = trainer_cls(model=teacher.model, args=args, train_dataset=train_ds,
                              data_collator=_Collate(teacher), callbacks=[epoch_eval])  # fmt: skip
        trainer.train()
    cost |= {"train_seconds": round(time.perf_counter() - t0, 2),
             "peak_memory_mb": round(peak_memory_mb(device), 1), "device": device.type}  # fmt: skip
    log.info("teacher %s fine-tuning cost: %s", name, cost)
    teacher.model.to("cpu")
    with atomic_dir(out_dir) as tmp:
        teacher.save(tmp)
        card = {
            "teacher": name,
            "config": asdict(cfg),
            "finetune": asdict(train_cfg),
            "train_images": int(len(train)),
            "val_images": int(len(val)),
            "history": epoch_eval.history,
            "checkpoint_hash": hash_tree(tmp / "model"),
            "finetune_cost": cost,
        }
        write_json(tmp / "card.json", card)
    return card
