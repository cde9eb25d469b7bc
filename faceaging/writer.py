"""Scalars and images to TensorBoard event files (no TensorFlow needed) and to the log."""

from __future__ import annotations

from absl import logging
import jax
import numpy as np
from tensorboardX import SummaryWriter


class MetricWriter:
    """Writes from process 0 only; logs scalars on every process."""

    def __init__(self, logdir: str):
        self._writer = SummaryWriter(logdir) if jax.process_index() == 0 else None

    def scalars(self, step: int, scalars: dict) -> None:
        logging.info("[%d] %s", step, ", ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items())))
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, float(value), step)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        if self._writer is not None:
            self._writer.add_image(tag, image, step, dataformats="HWC")

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
