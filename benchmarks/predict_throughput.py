"""Batch-aging throughput: images/s aged to every group of a trained run, on the devices present.

    python benchmarks/predict_throughput.py --workdir=runs/synthfaces [--batch_size=64] \
        [--batches=10] [--dtype=bfloat16]

Times the jitted aging of random uint8 batches (after one warm-up batch) with the run's EMA
generator, and separately the whole ``predict`` path (decode, age, write PNGs/grids) on a
temporary folder of JPEGs. Prints one line each.
"""

import os
import tempfile
import time

from absl import app, flags
import numpy as np
from PIL import Image

from faceaging import predict

flags.DEFINE_string("workdir", None, "A trained run.", required=True)
flags.DEFINE_integer("batch_size", 64, "Images per batch.")
flags.DEFINE_integer("batches", 10, "Timed batches for the device-only figure.")
flags.DEFINE_string("dtype", None, "Compute dtype override, e.g. bfloat16.")
flags.DEFINE_integer("files", 128, "JPEGs for the end-to-end figure.")


def main(_):
    f = flags.FLAGS
    config, schedule, graphs, params, step = predict.load_ema_generator(f.workdir, dtype=f.dtype)
    config.train.batch_size = f.batch_size
    ager = predict.Ager(config, graphs, params)
    codes = np.eye(schedule.num_groups, dtype=np.float32)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (f.batch_size, config.image_size, config.image_size, 3), dtype=np.uint8)
    ager(images, codes)
    start = time.perf_counter()
    for _ in range(f.batches):
        ager(images, codes)
    seconds = time.perf_counter() - start
    n = f.batches * f.batch_size
    print(f"device | step {step} | {config.image_size}px x {schedule.num_groups} groups | batch "
          f"{f.batch_size} {config.dtype} on {ager.mesh.size} device(s): {n / seconds:.1f} input img/s "
          f"({n * schedule.num_groups / seconds:.1f} aged img/s)")
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "in"))
        for i in range(f.files):
            Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(
                os.path.join(tmp, "in", f"{i:05d}.jpg"))
        start = time.perf_counter()
        summary = predict.predict(f.workdir, os.path.join(tmp, "in"), os.path.join(tmp, "out"),
                                  batch_size=f.batch_size, dtype=f.dtype)
        seconds = time.perf_counter() - start
    print(f"end-to-end | {summary.done} files decoded, aged to {schedule.num_groups} groups, "
          f"{schedule.num_groups + 1} PNGs each written: {summary.done / seconds:.1f} img/s "
          f"(includes compile)")


if __name__ == "__main__":
    app.run(main)
