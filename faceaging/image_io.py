"""Reading user images robustly: any mode, EXIF rotation, clear reasons for what is refused."""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, ImageOps

MIN_SIDE = 16  # pixels; smaller images hold no usable face
MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's decompression-bomb limit (~89 megapixels)


class BadImageError(ValueError):
    """An input that cannot be used, with a reason meant for the user."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB (16-bit and float rescaled, alpha laid on white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB")


def load_rgb(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the file at ``path``, upright per its EXIF orientation.

    Raises BadImageError naming the reason: empty, not an image, truncated, too small, too large.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise BadImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise BadImageError(f"too large ({image.width}x{image.height}; at most "
                                        f"{MAX_PIXELS:,} pixels)")
                image.load()
                image = ImageOps.exif_transpose(image)
                rgb = _to_rgb(image)
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(f"too large ({e})") from None
    except Image.UnidentifiedImageError:
        raise BadImageError("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"corrupt or truncated image ({e})") from None
    if min(rgb.size) < MIN_SIDE:
        raise BadImageError(f"too small ({rgb.width}x{rgb.height}; need at least {MIN_SIDE} px per side)")
    return np.asarray(rgb, np.uint8)


def square_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop, resized to ``size`` x ``size`` (aligned crops are square already)."""
    h, w, _ = rgb.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = Image.fromarray(rgb[top:top + side, left:left + side])
    if side != size:
        image = image.resize((size, size), Image.BICUBIC)
    return np.asarray(image, np.uint8)
