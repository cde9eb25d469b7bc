"""Train-step throughput: compiled GAN steps per second for a config, on the devices present.

    python benchmarks/train_step_speed.py --config=configs/synthfaces.py [--steps=20] \
        [--config.train.batch_size=16]

Prints compile time, median ms/step, steps/s and images/s over ``--steps`` timed steps (after
two warm-up steps), with random uint8 batches (no input pipeline).
"""

import time

from absl import app, flags
import jax
import numpy as np
from ml_collections import config_flags

from faceaging import mesh as mesh_lib, schedules, steps, train_state

config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("steps", 20, "Timed steps.")


def main(_):
    config = flags.FLAGS.config
    groups = schedules.get_schedule(config.data.schedule).num_groups
    mesh = mesh_lib.make_mesh(config)
    optimizers = train_state.make_optimizers(config)
    abstract, graphs = train_state.abstract_state(config, groups, optimizers)
    shardings = train_state.state_shardings(abstract, mesh_lib.replicated(mesh))
    state = train_state.create_train_state(config, groups, optimizers, shardings)
    step = jax.jit(steps.make_train_step(config, graphs, optimizers, groups),
                   in_shardings=(shardings, mesh_lib.data_sharded(mesh)), donate_argnums=0)
    rng = np.random.default_rng(0)
    n, s = config.train.batch_size, config.image_size
    src = rng.integers(0, groups, n).astype(np.int32)
    batch = jax.device_put({"image": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8), "source": src,
                            "target": ((src + 1) % groups).astype(np.int32)}, mesh_lib.data_sharded(mesh))
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(flags.FLAGS.steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    med = float(np.median(times))
    print(f"{jax.devices()[0].device_kind} x{mesh.size} | image {s} batch {n} dtype {config.dtype} | "
          f"compile+first {compile_s:.1f}s | {med * 1e3:.1f} ms/step (min {min(times) * 1e3:.1f}) | "
          f"{1 / med:.2f} steps/s | {n / med:.1f} img/s")


if __name__ == "__main__":
    app.run(main)
