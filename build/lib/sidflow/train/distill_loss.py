"""The student's loss and the teacher mixture it learns from (cache only, never a teacher).

    loss = task_loss                                   CE(logits, real/fake label)
         + alpha * T^2 * KL(mixture_T || softmax(logits / T))           -> kd_loss
         + beta  * mean_t (1 - cos(P_t(features), embedding_t))         -> feat_loss
         + object_weight * CE(object_logits, object class)              -> object_loss
         + generator_weight * CE(generator_logits, generator index)     -> generator_loss

Mixture of the teachers' temperature-softened distributions, per sample ``i``:
``mixture_i = sum_t w_t * m_t(i) * p_t(i) / sum_t w_t * m_t(i)`` with the fixed weights
``w_t`` from config and ``m_t(i)`` given by ``weighting``:

* ``fixed``: ``m = 1``;
* ``confidence``: ``m`` = the teacher's max class probability (confident teachers count more);
* ``correctness``: ``m`` = the probability the teacher gives the true label (a teacher that
  is wrong on an image barely teaches it).

``adjust="swap"`` (knowledge adjustment, Wen et al. 2019): where the mixture's most likely
class is not the true label, its two class probabilities are swapped, so the student never
learns a wrong class from the teachers but keeps their softness (how sure they are).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

WEIGHTINGS = ("fixed", "confidence", "correctness")
ADJUSTS = ("none", "swap")
LOSS_KEYS = ("loss", "task_loss", "kd_loss", "feat_loss", "object_loss", "generator_loss")


class DistillationLoss(torch.nn.Module):
    """``{loss, task_loss, kd_loss, feat_loss, object_loss, generator_loss}`` for one batch.

    ``P_t`` is a linear projection of the student's pooled features onto teacher t's
    cached embedding space (trained with the student, not saved with it). Object labels
    of -1 (unknown class) are ignored.
    """

    def __init__(
        self,
        alpha: float,
        temperature: float,
        beta: float = 0.0,
        feature_dim: int = 512,
        teacher_dims: dict[str, int] | None = None,
        object_weight: float = 0.0,
        generator_weight: float = 0.0,
    ):
        super().__init__()
        self.alpha, self.t, self.beta = alpha, temperature, beta
        self.object_weight, self.generator_weight = object_weight, generator_weight
        dims = teacher_dims if beta > 0 else {}
        self.projections = torch.nn.ModuleDict(
            {name: torch.nn.Linear(feature_dim, dim) for name, dim in (dims or {}).items()}
        )

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        teacher_probs: torch.Tensor | None,
        features: torch.Tensor | None = None,
        teacher_embeddings: dict[str, torch.Tensor] | None = None,
        outputs: dict[str, torch.Tensor] | None = None,
        object_labels: torch.Tensor | None = None,
        generator_labels: torch.Tensor | None = None,
    ) -> dict:
        task = F.cross_entropy(logits, labels)
        zero = torch.zeros((), device=logits.device)
        kd = feat = obj = gen = zero
        if teacher_probs is not None and self.alpha > 0:
            log_student = F.log_softmax(logits / self.t, dim=1)
            kd = F.kl_div(log_student, teacher_probs, reduction="batchmean") * self.t**2
        if self.beta > 0 and len(self.projections) and features is not None and teacher_embeddings:
            terms = [
                1 - F.cosine_similarity(self.projections[name](features), emb, dim=1).mean()
                for name, emb in teacher_embeddings.items()
            ]
            feat = torch.stack(terms).mean()
        outputs = outputs or {}
        if self.object_weight > 0 and "object_logits" in outputs and object_labels is not None:
            # sum / count keeps the graph (zero gradient) when no image has a known class
            valid = int((object_labels >= 0).sum())
            obj = F.cross_entropy(
                outputs["object_logits"].float(), object_labels, ignore_index=-1, reduction="sum"
            ) / max(1, valid)
        if (
            self.generator_weight > 0
            and "generator_logits" in outputs
            and generator_labels is not None
        ):
            gen = F.cross_entropy(outputs["generator_logits"].float(), generator_labels)
        loss = (
            task
            + self.alpha * kd
            + self.beta * feat
            + self.object_weight * obj
            + self.generator_weight * gen
        )
        return {
            "loss": loss,
            "task_loss": task.detach(),
            "kd_loss": kd.detach(),
            "feat_loss": feat.detach(),
            "object_loss": obj.detach(),
            "generator_loss": gen.detach(),
        }


def _aligned(df: pd.DataFrame, image_ids, name: str, column: str) -> pd.DataFrame:
    idx = df.set_index("image_id").reindex(image_ids)
    missing = int(idx[column].isna().sum())
    if missing:
        raise ValueError(f"teacher {name}: {missing} training images not in its cache")
    return idx


def teacher_embeddings(caches: dict[str, pd.DataFrame], image_ids) -> dict[str, torch.Tensor]:
    """Each teacher's cached embedding for ``image_ids`` (N x dim float32 tensors)."""
    out = {}
    for name, df in caches.items():
        idx = _aligned(df, image_ids, name, "embedding")
        out[name] = torch.from_numpy(np.stack(idx["embedding"].to_numpy()).astype(np.float32))
    return out


def teacher_mixture(
    caches: dict[str, pd.DataFrame],
    image_ids,
    weights: dict[str, float],
    t: float,
    weighting: str = "fixed",
    labels=None,
    adjust: str = "none",
) -> np.ndarray:
    """Per-sample weighted mixture of the teachers' softmax(logits / T), aligned to ``image_ids``."""
    if adjust not in ADJUSTS:
        raise ValueError(f"unknown mixture adjustment {adjust!r}; choose one of {ADJUSTS}")
    if adjust != "none" and labels is None:
        raise ValueError(f"adjust={adjust!r} needs the training labels")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown mixture weighting {weighting!r}; choose one of {WEIGHTINGS}")
    if weighting == "correctness" and labels is None:
        raise ValueError("correctness weighting needs the training labels")
    num = np.zeros((len(image_ids), 2), dtype=np.float64)
    den = np.zeros((len(image_ids), 1), dtype=np.float64)
    for name, df in caches.items():
        idx = _aligned(df, image_ids, name, "logit_fake")
        logits = idx[["logit_real", "logit_fake"]].to_numpy(np.float64)
        soft = np.exp(logits / t - (logits / t).max(1, keepdims=True))
        soft /= soft.sum(1, keepdims=True)
        w = np.full((len(image_ids), 1), float(weights.get(name, 1.0)))
        if weighting != "fixed":
            raw = np.exp(logits - logits.max(1, keepdims=True))  # T = 1 for the weights
            raw /= raw.sum(1, keepdims=True)
            if weighting == "confidence":
                w = w * raw.max(1, keepdims=True)
            else:
                w = w * raw[np.arange(len(raw)), np.asarray(labels, dtype=int)][:, None]
        num += w * soft
        den += w
    if (den <= 0).any():
        raise ValueError("teacher mixture weights sum to zero for some images")
    mix = num / den
    if adjust == "swap":
        wrong = mix.argmax(1) != np.asarray(labels, dtype=int)
        mix[wrong] = mix[wrong][:, ::-1]
    return mix.astype(np.float32)
