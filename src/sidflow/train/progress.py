"""Progress lines for every trained model: step, images/s, loss and ETA every ~30 seconds.

A CIFAKE epoch takes minutes; without this the log is silent between epochs. Every training
path reports through one :class:`Progress` (the student and RINE through
:func:`sidflow.train.loop.train_one_epoch`, the teachers through a Trainer callback, the
explainer through its own steps)::

    progress = Progress("student epoch 3", total_steps=len(loader))
    for batch in loader:
        loss = step(batch)
        progress.update(images=len(batch), loss=loss.detach())   # no host sync here
    progress.close()

The loss is kept as a tensor and read (one host sync) only when a line is written, so a GPU
step is never stalled. When stderr is a terminal a tqdm bar is shown as well; in Snakemake
jobs (log files) only the timed lines are written.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)


def _clock() -> float:
    return time.monotonic()


class Progress:
    """Timed progress lines (and a bar on a terminal) for one training pass."""

    def __init__(self, name: str, total_steps: int | None = None, every_s: float = 30.0,
                 logger: logging.Logger | None = None, bar: bool | None = None):  # fmt: skip
        self.name, self.total, self.every_s = name, total_steps, every_s
        self.log = logger or log
        self.step = self.images = 0
        self.t0 = self.last = _clock()
        self._loss = None  # latest loss, a tensor or a float; read only when a line is written
        self._bar = None
        if bar if bar is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, desc=name, unit="step", leave=False)

    def update(self, images: int = 0, loss=None, steps: int = 1) -> None:
        """Count ``steps`` more steps over ``images`` images; ``loss`` may stay on the device."""
        self.step += steps
        self.images += images
        if loss is not None:
            self._loss = loss
        if self._bar is not None:
            self._bar.update(steps)
        now = _clock()
        if now - self.last >= self.every_s:
            self.last = now
            self.log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """``name: step 120/480, 812.4 img/s, loss 0.4123, ETA 0:02:31`` (the parts known)."""
        elapsed = max((now if now is not None else _clock()) - self.t0, 1e-9)
        parts = [f"step {self.step}" + (f"/{self.total}" if self.total else "")]
        if self.images:
            parts.append(f"{self.images / elapsed:.1f} img/s")
        if self._loss is not None:
            parts.append(f"loss {float(self._loss):.4f}")
        if self.total and self.step:
            left = elapsed / self.step * max(self.total - self.step, 0)
            parts.append(f"ETA {time.strftime('%H:%M:%S', time.gmtime(left))}")
        return f"{self.name}: " + ", ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
