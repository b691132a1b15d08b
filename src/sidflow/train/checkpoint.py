"""Per-epoch training checkpoints: a killed run resumes where it stopped, bit for bit.

A checkpoint folder (written atomically, replaced each epoch) holds

* ``model.safetensors`` / ``best.safetensors``: current and best-so-far weights,
* ``criterion.safetensors``: the loss's own parameters (feature projections),
* ``optimizer.pt``: optimizer + scheduler state (plain tensors and numbers, loaded
  with ``weights_only=True``),
* ``state.json``: epoch, history, best epoch/AP, the validation scores of the best
  epoch and the ``fingerprint`` of the run (config + training images). A checkpoint
  whose fingerprint differs from the current run's is ignored, never half-reused.

Epoch ``e`` reseeds every random generator from ``(seed, e)``, so resuming at epoch
``e`` replays exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from sidflow.io import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(
    path, *, model, criterion, optimizer, scheduler, best_state, state: dict
) -> None:
    from safetensors.torch import save_file

    with atomic_dir(path) as tmp:
        save_file(_state(model), str(tmp / "model.safetensors"))
        save_file(_state(criterion), str(tmp / "criterion.safetensors"))
        if best_state is not None:
            save_file(best_state, str(tmp / "best.safetensors"))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
            tmp / "optimizer.pt",
        )
        write_json(tmp / "state.json", state)


def load_checkpoint(path, fingerprint: str, *, model, criterion, optimizer, scheduler):
    """Restore a checkpoint into the given objects; returns (state, best_state) or None."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "state.json").exists():
        return None
    state = read_json(path / "state.json")
    if state.get("fingerprint") != fingerprint:
        log.warning("checkpoint %s belongs to another configuration; starting afresh", path)
        return None
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    criterion.load_state_dict(load_file(str(path / "criterion.safetensors")))
    opt = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    best = path / "best.safetensors"
    best_state = load_file(str(best)) if best.exists() else None
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return state, best_state
