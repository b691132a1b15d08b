"""RINE: a detector over the CLS tokens of every CLIP encoder block.

Koutlis & Papadopoulos, "Leveraging Representations from Intermediate Encoder-blocks
for Synthetic Image Detection", ECCV 2024 (arXiv 2402.19091). The frozen encoder is
not part of this module: it reads the cached ``n x d`` block tokens
(:mod:`sidflow.cache.clip_features`), so training never re-runs CLIP.

    tokens (B, n, d) ─ Q1 (per block, shared) ─▶ (B, n, p)
                     ─ TIE: softmax over blocks of A (n, p), weighted sum ─▶ (B, p)
                     ─ Q2 ─▶ z (B, p)  [contrastive loss on normalised z]
                     ─ head (3 layers) ─▶ logit  [binary cross-entropy]

    model = create_rine(RineConfig(n_blocks=24, dim=1024))
    out = model(tokens)       # {"logit": (B,), "features": (B, p)}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class RineConfig:
    """Architecture; defaults are the paper's best LDM-trained model (4 projection layers
    of 1024 units, dropout 0.5)."""

    n_blocks: int = 24
    dim: int = 1024
    nproj: int = 4
    proj_dim: int = 1024
    dropout: float = 0.5
    # how blocks are combined: "learned" (the paper's Trainable Importance Estimator), or the
    # paper's ablations "mean" (equal weights, nothing learned) and "last" (last block only)
    importance: str = "learned"


IMPORTANCE_MODES = ("learned", "mean", "last")


def _projection(d_in: int, d_out: int, layers: int, dropout: float) -> nn.Sequential:
    mods: list[nn.Module] = [nn.Dropout(dropout)]
    for i in range(layers):
        mods += [nn.Linear(d_in if i == 0 else d_out, d_out), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*mods)


class Rine(nn.Module):
    def __init__(self, cfg: RineConfig):
        super().__init__()
        if cfg.nproj < 1 or cfg.n_blocks < 1:
            raise ValueError(f"RINE needs nproj >= 1 and n_blocks >= 1, got {cfg}")
        if cfg.importance not in IMPORTANCE_MODES:
            raise ValueError(
                f"RINE importance must be one of {IMPORTANCE_MODES}, got {cfg.importance!r}"
            )
        self.cfg = cfg
        # optional fixed input standardisation (per block and feature), set from training data
        self.register_buffer("token_mean", torch.zeros(cfg.n_blocks, cfg.dim))
        self.register_buffer("token_std", torch.ones(cfg.n_blocks, cfg.dim))
        self.proj1 = _projection(cfg.dim, cfg.proj_dim, cfg.nproj, cfg.dropout)
        # Trainable Importance Estimator: one score per (block, feature); fixed in the ablations
        self.importance = nn.Parameter(
            torch.randn(cfg.n_blocks, cfg.proj_dim), requires_grad=cfg.importance == "learned"
        )
        self.proj2 = _projection(cfg.proj_dim, cfg.proj_dim, cfg.nproj, cfg.dropout)
        p = cfg.proj_dim
        self.head = nn.Sequential(
            nn.Linear(p, p), nn.ReLU(), nn.Dropout(cfg.dropout),
            nn.Linear(p, p), nn.ReLU(), nn.Dropout(cfg.dropout),
            nn.Linear(p, 1),
        )  # fmt: skip

    def block_weights(self) -> torch.Tensor:
        """Weights of the blocks per feature (n_blocks x proj_dim, columns sum to 1): the
        softmax over blocks of the importance scores, or equal / last-block-only weights."""
        if self.cfg.importance == "mean":
            return torch.full_like(self.importance, 1.0 / self.cfg.n_blocks)
        if self.cfg.importance == "last":
            w = torch.zeros_like(self.importance)
            w[-1] = 1.0
            return w
        return torch.softmax(self.importance, dim=0)

    def block_importance(self) -> torch.Tensor:
        """One number per block (mean weight over features); sums to 1."""
        return self.block_weights().mean(dim=1)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        if tokens.dim() != 3 or tokens.shape[1:] != (self.cfg.n_blocks, self.cfg.dim):
            raise ValueError(
                f"RINE expects tokens of shape (B, {self.cfg.n_blocks}, {self.cfg.dim}), "
                f"got {tuple(tokens.shape)}"
            )
        h = self.proj1((tokens - self.token_mean) / self.token_std)
        z = (self.block_weights().unsqueeze(0) * h).sum(dim=1)
        z = self.proj2(z)
        return {"logit": self.head(z).squeeze(1), "features": z}


def create_rine(cfg: RineConfig | dict | None = None) -> Rine:
    """Factory beside ``create_teacher``/``create_student``."""
    if isinstance(cfg, dict):
        cfg = RineConfig(**cfg)
    return Rine(cfg or RineConfig())


def published_state_dict(state: dict[str, torch.Tensor], model: Rine) -> dict[str, torch.Tensor]:
    """The reference implementation's trainable part (``mever-team/rine``'s
    ``model_*_trainable.pth``: ``alpha`` (1, n_blocks, proj_dim), ``proj1.*``, ``proj2.*``,
    ``head.*``) as a state dict of ``model``: ``alpha`` becomes ``importance``, and the
    token standardisation (not part of the paper) is the identity. Strict: every tensor must be
    used and fit, else a ``ValueError`` naming the tensor."""
    own = model.state_dict()
    out = {"token_mean": torch.zeros_like(own["token_mean"]),
           "token_std": torch.ones_like(own["token_std"])}  # fmt: skip
    for key, value in state.items():
        name = "importance" if key == "alpha" else key
        if name not in own or name.startswith("token_"):
            raise ValueError(f"published RINE weights: unexpected tensor {key!r}")
        value = value[0] if key == "alpha" and value.dim() == 3 and value.shape[0] == 1 else value
        if tuple(value.shape) != tuple(own[name].shape):
            raise ValueError(f"published RINE weights: tensor {key!r} has shape "
                             f"{tuple(value.shape)}, the model expects {tuple(own[name].shape)}")  # fmt: skip
        out[name] = value.to(own[name].dtype)
    missing = sorted(set(own) - set(out))
    if missing:
        raise ValueError(f"published RINE weights: missing tensors {missing}")
    return out


def load_published_rine(path: str, cfg: RineConfig | None = None) -> Rine:
    """A RINE with the paper's published trainable weights (a plain ``state_dict`` loaded with
    ``weights_only=True``), in eval mode. ``cfg`` defaults to the 2-class model's shape read
    from the file: ``n_blocks`` and ``proj_dim`` from ``alpha``, ``nproj`` from ``proj1``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if cfg is None:
        if "alpha" not in state or "proj1.1.weight" not in state:
            raise ValueError(f"{path}: not a RINE trainable state dict (no alpha / proj1.1.weight)")
        n_blocks, proj_dim = state["alpha"].shape[-2:]
        dim = state["proj1.1.weight"].shape[1]
        nproj = len([k for k in state if k.startswith("proj1.") and k.endswith(".weight")])
        cfg = RineConfig(n_blocks=n_blocks, dim=dim, nproj=nproj, proj_dim=proj_dim)
    model = create_rine(cfg)
    model.load_state_dict(published_state_dict(state, model), strict=True)
    return model.eval()


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07):
    """Supervised contrastive loss (Khosla et al. 2020), one view per sample.

    ``features`` are L2-normalised here. For each anchor, the positives are the other
    samples with its label; anchors without a positive in the batch are skipped (0 if none
    has one)."""
    z = F.normalize(features.float(), dim=1)
    n = z.shape[0]
    sim = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels.view(-1, 1) == labels.view(1, -1)) & ~self_mask
    n_pos = pos.sum(1)
    keep = n_pos > 0
    if not bool(keep.any()):
        return features.sum() * 0.0
    mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(1)[keep] / n_pos[keep]
    return -mean_log_prob_pos.mean()


def rine_loss(
    out: dict[str, torch.Tensor], labels: torch.Tensor, contrastive_weight: float,
    temperature: float = 0.07,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """``{loss, bce_loss, contrastive_loss}``: BCE + weight x SupCon.

    As in the reference implementation the BCE is summed over the batch (not averaged),
    so ``contrastive_weight`` has the paper's meaning (0.1-0.8 in its grid)."""
    bce = F.binary_cross_entropy_with_logits(out["logit"].float(), labels.float(), reduction="sum")
    con = (
        supcon_loss(out["features"], labels, temperature)
        if contrastive_weight > 0
        else bce.new_zeros(())
    )
    return {"loss": bce + contrastive_weight * con, "bce_loss": bce, "contrastive_loss": con}
