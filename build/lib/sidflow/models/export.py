"""Export a trained student to ONNX and/or TorchScript, with a parity check.

    sidflow export --model results/cifake/models/student-kd --format onnx torchscript

Writes ``student.onnx`` / ``student.torchscript.pt`` next to ``model.safetensors``.
Both take a float tensor N x 3 x H x W normalised exactly as in training
(``(x / 255 - image_mean) / image_std``, stored in ``student.json``) and return the
(real, fake) logits. Every export is checked against the PyTorch model on random
inputs (max absolute logit difference, written to ``export.json``); an export
that disagrees beyond ``atol`` is an error, not a file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from sidflow.io import atomic_path, write_json

log = logging.getLogger(__name__)
FORMATS = ("onnx", "torchscript")


class LogitsOnly(torch.nn.Module):
    """The student as ``x -> logits`` (exporters want a tensor, not a dict)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["logits"]


def _sample(size: int, n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def export_torchscript(model: torch.nn.Module, size: int, path: Path) -> Path:
    traced = torch.jit.trace(LogitsOnly(model).eval(), _sample(size, 2), check_trace=False)
    with atomic_path(path, suffix=".pt") as tmp:
        traced.save(str(tmp))
    return path


def export_onnx(model: torch.nn.Module, size: int, path: Path) -> Path:
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "ONNX export needs the 'export' extra: pip install 'sidflow[export]'"
        ) from exc
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic_path(path, suffix=".onnx") as tmp:
        torch.onnx.export(LogitsOnly(model).eval(), (_sample(size, 2),), str(tmp), input_names=["image"],
                          output_names=["logits"], dynamic_shapes={"x": {0: batch}}, dynamo=True,
                          external_data=False)  # fmt: skip
    return path


def run_exported(path: Path, x: torch.Tensor) -> np.ndarray:
    """Logits from an exported file (onnxruntime for .onnx, torch.jit for TorchScript)."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return module(x).numpy()


def export_student(model_dir: str | Path, formats=FORMATS, atol: float = 1e-3) -> dict:
    """Export the student in ``model_dir``; returns ``{format: {"path", "max_abs_diff"}}``."""
    from sidflow.models.student import load_student

    model_dir = Path(model_dir)
    model, meta = load_student(model_dir)
    model = model.float().eval()
    size = int(meta["student"]["image_size"])
    x = _sample(size, 8)
    with torch.no_grad():
        reference = model(x)["logits"].numpy()
    report = {}
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; choose from {FORMATS}")
        path = model_dir / ("student.onnx" if fmt == "onnx" else "student.torchscript.pt")
        (export_onnx if fmt == "onnx" else export_torchscript)(model, size, path)
        diff = float(np.abs(run_exported(path, x) - reference).max())
        if diff > atol:
            path.unlink(missing_ok=True)
            raise RuntimeError(
                f"{fmt} export of {model_dir} differs from PyTorch by {diff:.2e} > {atol}"
            )
        report[fmt] = {"path": path.name, "max_abs_diff": diff}
        log.info("exported %s (max |logit difference| %.2e)", path, diff)
    write_json(
        model_dir / "export.json", {"input": f"N x 3 x {size} x {size}", "atol": atol, **report}
    )
    return report
