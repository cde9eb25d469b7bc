"""Helpers shared by test modules (fixtures live in conftest.py)."""

import importlib.util
import os

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MALFORMED_NAMES = ("61_1_20170109150557335.jpg.chip.jpg",  # race missing (as in UTKFace)
                   "abc_0_1_20170109150557335.jpg.chip.jpg",
                   "200_0_1_20170109150557336.jpg.chip.jpg",  # age out of range
                   "30_5_1_20170109150557337.jpg.chip.jpg")  # gender out of range


def write_utkface_folder(folder, count: int, seed: int = 0, malformed: bool = True) -> list:
    """Writes ``count`` 200x200 JPEGs named like UTKFace (plus malformed ones); returns good names."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        age, gender, race = int(rng.integers(1, 100)), i % 2, i % 5
        name = f"{age}_{gender}_{race}_2017{i:013d}.jpg.chip.jpg"
        # Smooth colour blobs: compressible and learnable, unlike pure noise.
        yy, xx = np.mgrid[0:200, 0:200] / 200.0
        base = rng.uniform(0, 255, 3)
        image = base + 60 * np.sin(6 * xx[..., None] + rng.uniform(0, 6, 3)) * np.cos(4 * yy[..., None])
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(os.path.join(folder, name))
        names.append(name)
    if malformed:
        for name in MALFORMED_NAMES:
            Image.new("RGB", (200, 200)).save(os.path.join(folder, name))
    return names


def synth_config(arg: str = ""):
    """``configs/synthfaces.py`` (``:arg``), loaded as the CLI would."""
    spec = importlib.util.spec_from_file_location("synthfaces_config",
                                                  os.path.join(ROOT, "configs", "synthfaces.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)
