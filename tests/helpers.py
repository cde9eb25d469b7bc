"""Helpers shared by test modules (fixtures live in conftest.py)."""

import importlib.util
import os
import re
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EIGEN_WORKERS = 32  # XLA:CPU's thread pool in the tests (NPROC): 4x the simulated devices (conftest.py)
# Every part of the model at its smallest, for tests whose subject is not the model's size:
# tracing and compiling the step dominate them, and both grow with the number of layers.
SMALLEST_MODEL = dict(encoder_channels=(8,), encoder_factors=(2,), encoder_extra_blocks=0,
                      style_dim=8, disc_channels=(8,))
SMALLEST_MODEL_FLAGS = tuple(f"--config.model.{k}={v}" for k, v in SMALLEST_MODEL.items())

MALFORMED_NAMES = ("61_1_20170109150557335.jpg.chip.jpg",  # race missing (as in UTKFace)
                   "abc_0_1_20170109150557335.jpg.chip.jpg",
                   "200_0_1_20170109150557336.jpg.chip.jpg",  # age out of range
                   "30_5_1_20170109150557337.jpg.chip.jpg")  # gender out of range


def with_device_count(xla_flags: str, devices: int) -> str:
    """``xla_flags`` with the simulated CPU device count set to ``devices`` (any other dropped)."""
    kept = re.sub(r"--xla_force_host_platform_device_count=\S*", "", xla_flags)
    return f"{kept} --xla_force_host_platform_device_count={devices}".strip()


def subprocess_env(devices: int, **extra) -> dict:
    """The environment of a CLI subprocess on ``devices`` simulated CPU devices: this session's
    XLA flags (conftest.py) with that device count, and no persistent compile cache (executables
    with cross-device collectives loaded from it deadlock on simulated CPU devices)."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(JAX_PLATFORMS="cpu", **extra,
               XLA_FLAGS=with_device_count(env.get("XLA_FLAGS", ""), devices))
    return env


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


def adam_parameter_atol(learning_rate: float, steps: int) -> float:
    """How far two runs' parameters may part when their sums differ only in rounding order.

    Adam (here b1 = 0) normalises each gradient by its running scale, so an element whose true
    gradient is ~0 moves by about +-lr per step whatever the rounding noise's size: two runs can
    part by ~2 lr per step on such elements (seen: 4.7 lr after 6 steps), while the losses agree
    to float precision. A real fault (a shard saved or restored in the wrong place) parts the
    weights by their own scale, ~0.1.
    """
    return 2 * learning_rate * steps


def synth_config(arg: str = ""):
    """``configs/synthfaces.py`` (``:arg``), loaded as the CLI would."""
    spec = importlib.util.spec_from_file_location("synthfaces_config",
                                                  os.path.join(ROOT, "configs", "synthfaces.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def abstract_step_inputs(config, num_groups: int):
    """(optimizers, graphs, abstract state, abstract batch): what tracing or lowering a train
    step for ``config`` needs, without creating any weights."""
    import jax
    import jax.numpy as jnp
    from faceaging import train_state

    optimizers = train_state.make_optimizers(config)
    abstract, graphs = train_state.abstract_state(config, num_groups, optimizers)
    n, s = config.train.batch_size, config.image_size
    batch = {"image": jax.ShapeDtypeStruct((n, s, s, 3), jnp.uint8),
             "source": jax.ShapeDtypeStruct((n,), jnp.int32),
             "target": jax.ShapeDtypeStruct((n,), jnp.int32)}
    return optimizers, graphs, abstract, batch


def main_in_process(*argv) -> int:
    """Runs ``python -m faceaging.main ARGV`` in this process (sharing its compile cache);
    returns the exit code (0 when main returns). ``app.UsageError`` propagates."""
    from absl import flags

    from faceaging import main as main_lib

    parsed, argv = flags.FLAGS, ["faceaging", "--compilation_cache=", *argv]
    saved_argv = sys.argv
    sys.argv = argv  # ml_collections reads --config.* overrides from sys.argv
    parsed.unparse_flags()
    try:
        parsed(argv)
        main_lib.main(argv[:1])
        return 0
    except SystemExit as e:
        return e.code
    finally:
        sys.argv = saved_argv
        for name in [n for n in parsed if n.startswith("config.")]:
            delattr(parsed, name)  # the override flags --config defined; the next call defines its own
        parsed.unparse_flags()
        parsed.mark_as_parsed()


def read_scalars(logdir) -> dict:
    """{tag: {step: value}} of every scalar in the TensorBoard event files of ``logdir`` (read
    record by record: length, its CRC, an ``Event`` proto, its CRC)."""
    import glob
    import struct

    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in sorted(glob.glob(os.path.join(str(logdir), "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def start_cli(dirs, workdir, cache, *flags):
    """``python -m faceaging.main`` on ``configs/utk.py:tiny`` and the data ``dirs``, in a
    subprocess on one CPU device, training (by default) for ever with a loss line every step."""
    env = subprocess_env(1)
    return subprocess.Popen(
        [sys.executable, "-m", "faceaging.main", "--config=configs/utk.py:tiny",
         f"--workdir={workdir}", f"--compilation_cache={cache}",
         f"--config.data.manual_dir={dirs[0]}", f"--config.data.data_dir={dirs[1]}",
         "--config.train.steps=100000", "--config.train.log_every=1",
         "--config.train.sample_every=100000", *flags],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_line(process, needle, timeout=300) -> list:
    """Lines of ``process`` until one contains ``needle`` (fails on exit or timeout)."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    process.kill()
    pytest.fail(f"never saw {needle!r}:\n" + "".join(lines[-40:]))
