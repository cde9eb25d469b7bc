"""Labelled image grids: inputs in the first column, one column per target age group."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from faceaging import files

PAD = 2
MIN_CELL = 96  # smaller cells are enlarged (nearest neighbour) so faces and labels stay legible
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without scalable default font
        return ImageFont.load_default()


def enlarge(images: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) images repeated (nearest neighbour) until at least MIN_CELL pixels wide."""
    factor = -(-MIN_CELL // images.shape[-2])
    return images.repeat(factor, axis=-3).repeat(factor, axis=-2) if factor > 1 else images


def labelled_grid(cells: np.ndarray, column_labels, row_labels=None) -> np.ndarray:
    """(N,K,H,W,3) uint8 cells -> one grid image with a label above each column (and row)."""
    cells = enlarge(cells)
    n, k, h, w, _ = cells.shape
    font_size = max(10, min(w // 5, 18))
    font = _font(font_size)
    header = font_size + 2 * PAD
    left = 0 if row_labels is None else max(len(str(r)) for r in row_labels) * font_size * 2 // 3 + 2 * PAD
    canvas = Image.new("RGB", (left + k * (w + PAD) + PAD, header + n * (h + PAD) + PAD), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for col, label in enumerate(column_labels):
        draw.text((left + PAD + col * (w + PAD) + w // 2, PAD), str(label), fill=TEXT, font=font, anchor="ma")
    for row in range(n):
        y = header + row * (h + PAD)
        if row_labels is not None:
            draw.text((PAD, y + h // 2), str(row_labels[row]), fill=TEXT, font=font, anchor="lm")
        for col in range(k):
            canvas.paste(Image.fromarray(cells[row, col]), (left + PAD + col * (w + PAD), y))
    return np.asarray(canvas)


def aging_grid(inputs: np.ndarray, aged: np.ndarray, labels) -> np.ndarray:
    """(N,H,W,3) inputs and (N,K,H,W,3) aged uint8 -> grid: input column, then one per group."""
    return labelled_grid(np.concatenate([inputs[:, None], aged], axis=1), ["input", *labels])


def save_png(image: np.ndarray, path: str) -> None:
    """Writes a PNG atomically, creating parent folders."""
    with files.atomic_write(path) as f:
        Image.fromarray(image).save(f, format="PNG")
