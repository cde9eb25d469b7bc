"""Recommended UTKFace setup: 128x128, 14 groups, bf16 compute.

``--config=configs/utk.py:tiny`` gives a CPU-sized model and batch for smoke runs.
"""

from faceaging import config as base


def get_config(arg: str = ""):
    c = base.base_config()
    if arg == "tiny":
        base.tiny(c)
    elif arg:
        raise ValueError(f"configs/utk.py takes '' or 'tiny', got {arg!r}")
    return c
