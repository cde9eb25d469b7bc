"""Test setup: 8 simulated CPU devices, a private compile cache, datasets generated once per session.

Set, not defaulted: an inherited XLA_FLAGS or JAX_PLATFORMS must not change how many devices the
tests see. XLA's CPU backend skips LLVM's optimisation passes (``--xla_backend_optimization_level=0``
unless XLA_FLAGS names a level): the tests run tiny models for a few steps, so compiling is most
of their time, and this halves it (two model tests: 84 s -> 44 s); the program is the same, its
machine code less tuned. Subprocesses inherit it. The persistent compile cache is a fresh folder
of this session (removed at exit), never the user's or a concurrent run's; subprocesses do not
inherit it (tests/test_cli.py: executables with cross-device collectives loaded from a cache
deadlock on simulated CPU devices).

XLA:CPU runs the collectives of a multi-device program on its Eigen thread pool, which has
max(NPROC or the core count, device count) workers: exactly 8 here. Devices that reach two
independent collectives in opposite orders can then hold every worker, each waiting for a
collective whose last participant has no worker left, until XLA aborts the whole process (40 s):
the FSDP step (tests/test_train.py) did so in CI, and in 3 of 3 stress runs of 200 steps (after
51 in one). NPROC=32 here (an inherited larger value is kept; subprocesses inherit it): no stall
in 200 steps at NPROC 16, 32 or 64.
"""

import atexit
import os
import shutil
import tempfile

from helpers import (EIGEN_WORKERS, synth_config, with_device_count,  # imports no jax
                     write_utkface_folder)

_inherited = os.environ.get("XLA_FLAGS", "")
if "--xla_backend_optimization_level" not in _inherited:
    _inherited += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = with_device_count(_inherited, 8)
os.environ["JAX_PLATFORMS"] = "cpu"
_nproc = os.environ.get("NPROC", "")
os.environ["NPROC"] = str(max(EIGEN_WORKERS, int(_nproc) if _nproc.isdigit() else 0))
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
COMPILE_CACHE = tempfile.mkdtemp(prefix="faceaging-test-jax-")
atexit.register(shutil.rmtree, COMPILE_CACHE, True)

from absl import flags  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402

from faceaging import config as config_lib, datasets  # noqa: E402

jax.config.update("jax_compilation_cache_dir", COMPILE_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
flags.FLAGS.mark_as_parsed()  # grain reads absl flags


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



@pytest.fixture(scope="session")
def synth_dirs(tmp_path_factory):
    """(manual_dir, data_dir) of ``configs/synthfaces.py:tiny``, rendered and built once."""
    root = tmp_path_factory.mktemp("synth")
    config = synth_config("tiny")
    config.data.manual_dir, config.data.data_dir = str(root / "manual"), str(root / "tfds")
    datasets.prepare(config)
    return config.data.manual_dir, config.data.data_dir


@pytest.fixture
def synth_tiny_config(synth_dirs):
    """``configs/synthfaces.py:tiny`` on one device, on the session's rendered SynthFaces."""
    config = synth_config("tiny")
    config.data.manual_dir, config.data.data_dir = synth_dirs
    config.mesh.num_devices = 1
    return config
