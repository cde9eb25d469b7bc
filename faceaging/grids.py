"""Labelled image grids: inputs in the first column, one column per target age group."""

from __future__ import annotations

import os
import tempfile

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAD = 2
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without scalable default font
        return ImageFont.load_default()


def aging_grid(inputs: np.ndarray, aged: np.ndarray, labels) -> np.ndarray:
    """(N,H,W,3) inputs and (N,K,H,W,3) aged uint8 -> one labelled uint8 grid image."""
    n, k, h, w, _ = aged.shape
    font_size = max(10, min(w // 5, 18))
    header = font_size + 2 * PAD
    canvas = Image.new("RGB", ((k + 1) * (w + PAD) + PAD, header + n * (h + PAD) + PAD), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(font_size)
    for col, label in enumerate(["input", *labels]):
        draw.text((PAD + col * (w + PAD) + w // 2, PAD), label, fill=TEXT, font=font, anchor="ma")
    for row in range(n):
        y = header + row * (h + PAD)
        canvas.paste(Image.fromarray(inputs[row]), (PAD, y))
        for col in range(k):
            canvas.paste(Image.fromarray(aged[row, col]), (PAD + (col + 1) * (w + PAD), y))
    return np.asarray(canvas)


def save_png(image: np.ndarray, path: str) -> None:
    """Writes a PNG atomically (a temp file renamed into place), creating parent folders."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(image).save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
