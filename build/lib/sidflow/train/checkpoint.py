"""Per-epoch training checkpoints: a killed run resumes where it stopped, bit for bit.

A checkpoint folder (written atomically, replaced each epoch) holds

* ``<name>.safetensors`` for each module (the student writes ``model`` and ``criterion``,
  the loss's own parameters), and ``best.safetensors``: the best-so-far weights,
* ``optimizer.pt``: optimizer (+ scheduler) state and the torch random generators' state
  (plain tensors and numbers, loaded with ``weights_only=True``),
* ``state.json``: epoch, history, best epoch/AP, the validation scores of the best
  epoch and the ``fingerprint`` of the run (config + training images). A checkpoint
  whose fingerprint differs from the current run's is ignored, never half-reused.

Epoch ``e`` of the student reseeds every random generator from ``(seed, e)``; a loop that
does not reseed gets the torch generators back from the checkpoint. Either way resuming at
epoch ``e`` replays exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from sidflow.io import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _rng_state() -> dict[str, Any]:
    out: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_rng"] = torch.cuda.get_rng_state()  # the current device's
    return out


def save_checkpoint(
    path, *, modules: dict[str, torch.nn.Module], stateful: dict[str, Any], best_state,
    state: dict,
) -> None:  # fmt: skip
    """``modules``: name -> module (weights); ``stateful``: name -> object with
    ``state_dict`` (optimizer, scheduler)."""
    from safetensors.torch import save_file

    with atomic_dir(path) as tmp:
        for name, module in modules.items():
            save_file(_state(module), str(tmp / f"{name}.safetensors"))
        if best_state is not None:
            save_file(best_state, str(tmp / "best.safetensors"))
        torch.save(
            {k: v.state_dict() for k, v in stateful.items()} | _rng_state(), tmp / "optimizer.pt"
        )
        write_json(tmp / "state.json", state)


def load_checkpoint(
    path, fingerprint: str, *, modules: dict[str, torch.nn.Module], stateful: dict[str, Any]
):
    """Restore a checkpoint into the given objects; returns (state, best_state) or None."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "state.json").exists():
        return None
    state = read_json(path / "state.json")
    if state.get("fingerprint") != fingerprint:
        log.warning("checkpoint %s belongs to another configuration; starting afresh", path)
        return None
    for name, module in modules.items():
        module.load_state_dict(load_file(str(path / f"{name}.safetensors")))
    saved = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    for name, obj in stateful.items():
        obj.load_state_dict(saved[name])
    if "torch_rng" in saved:
        torch.set_rng_state(saved["torch_rng"])
    if "cuda_rng" in saved and torch.cuda.is_available():
        torch.cuda.set_rng_state(saved["cuda_rng"])
    best = path / "best.safetensors"
    best_state = load_file(str(best)) if best.exists() else None
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return state, best_state
