"""Identity similarity from a user-supplied face-embedding network (ArcFace-style ONNX model).

Evaluation embeds each input face and its aged versions and reports the cosine similarity of
the embeddings. The model file is never downloaded: users place an ArcFace-style ONNX model
(for example InsightFace's ``w600k_r50.onnx``: 112x112 RGB, (x - 127.5) / 127.5, NCHW, one
512-d output) and may pin its SHA-256 in the config. Needs the ``eval`` extra (onnxruntime).
"""

from __future__ import annotations

import os

from absl import logging
import ml_collections
import numpy as np
from PIL import Image

from faceaging.weight_files import WeightsError, file_sha256


class FaceEmbedder:
    """uint8 face images (N, H, W, 3) -> L2-normalised embeddings (N, D), by onnxruntime."""

    def __init__(self, path: str, c: ml_collections.ConfigDict):
        if not os.path.isfile(path):
            raise WeightsError(f"face-embedding model not found at {path}")
        self.sha256 = file_sha256(path)
        if c.identity_weights_sha256 and self.sha256 != c.identity_weights_sha256.lower():
            raise WeightsError(f"{path}: SHA-256 {self.sha256} does not match "
                               f"config.eval.identity_weights_sha256={c.identity_weights_sha256}")
        if not c.identity_weights_sha256:
            logging.warning("%s is not pinned: set config.eval.identity_weights_sha256=%s",
                            path, self.sha256)
        try:
            import onnxruntime
        except ImportError as e:
            raise ImportError("identity similarity needs onnxruntime: pip install 'faceaging[eval]'") from e
        try:
            self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad models
            raise WeightsError(f"{path}: not an ONNX model onnxruntime can load ({e})") from e
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise WeightsError(f"{path}: expected one 4-d image input, got "
                               f"{[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        self.channels_first = inputs[0].shape[1] == 3
        spatial = inputs[0].shape[2:4] if self.channels_first else inputs[0].shape[1:3]
        self.size = tuple(d if isinstance(d, int) else c.identity_image_size for d in spatial)
        self.crop, self.mean, self.std = c.identity_crop, c.identity_mean, c.identity_std
        if c.identity_channels not in ("RGB", "BGR"):
            raise ValueError(f"config.eval.identity_channels={c.identity_channels!r}: expected 'RGB' or 'BGR'")
        self.bgr = c.identity_channels == "BGR"

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        ch, cw = round(h * self.crop), round(w * self.crop)
        top, left = (h - ch) // 2, (w - cw) // 2
        face = Image.fromarray(image[top:top + ch, left:left + cw])
        x = np.asarray(face.resize(self.size[::-1], Image.BILINEAR), np.float32)
        x = (x[..., ::-1] if self.bgr else x) - self.mean
        return x / self.std

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = np.stack([self._prepare(image) for image in images])
        if self.channels_first:
            x = x.transpose(0, 3, 1, 2)
        embedding = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]
        embedding = embedding.reshape(len(images), -1).astype(np.float64)
        return embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of L2-normalised embeddings."""
    return (a * b).sum(axis=1)
