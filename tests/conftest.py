"""Test setup: 8 simulated CPU devices, a persistent compile cache, generated UTKFace folders."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
import pytest  # noqa: E402

from faceaging import config as config_lib  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("FACEAGING_TEST_CACHE", os.path.expanduser("~/.cache/faceaging-test-jax")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
flags.FLAGS.mark_as_parsed()  # grain reads absl flags

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


@pytest.fixture(scope="session")
def utk_dirs(tmp_path_factory):
    """(manual_dir, data_dir) with 96 generated UTKFace-format images in manual_dir/UTKFace."""
    root = tmp_path_factory.mktemp("utk")
    write_utkface_folder(root / "manual" / "UTKFace", 96)
    return str(root / "manual"), str(root / "tfds")


@pytest.fixture(scope="session")
def fid_weights(tmp_path_factory):
    """(path, state dict) of a random FID InceptionV3 written as the converter writes it."""
    from weights_fixtures import write_inception_weights

    path = str(tmp_path_factory.mktemp("weights") / "fid_inception.npz")
    return path, write_inception_weights(path)


@pytest.fixture
def tiny_config(utk_dirs):
    """The tiny config on one device (multi-device tests set config.mesh.num_devices=-1)."""
    config = config_lib.tiny(config_lib.base_config())
    config.data.manual_dir, config.data.data_dir = utk_dirs
    config.mesh.num_devices = 1
    return config

