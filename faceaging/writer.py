"""Scalars and images to TensorBoard event files (no TensorFlow needed) and to the log.

The log directory may be in a bucket (gs://): its event file is written through ``files``.
"""

from __future__ import annotations

import io

from absl import logging
import jax
import numpy as np
from tensorboardX import SummaryWriter, record_writer

from faceaging import files


class _BucketEventFile:
    """An event file in a bucket, where objects cannot be appended to: the records so far,
    uploaded whole at every flush (tensorboardX flushes every two minutes and on close)."""

    def __init__(self, path: str):
        self.path, self._records = path, io.BytesIO()

    def write(self, data: bytes) -> None:
        self._records.write(data)

    def flush(self) -> None:
        files.write_bytes(self.path, self._records.getvalue())

    def close(self) -> None:
        self.flush()


class _BucketEventFiles:
    def open(self, path: str) -> _BucketEventFile:
        return _BucketEventFile(path)

    def directory_check(self, path: str) -> None:
        del path  # buckets have no folders to create


record_writer.register_writer_factory("gs", _BucketEventFiles())


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
