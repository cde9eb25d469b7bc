"""Batch-aging throughput: images/s aged to every group, FLOPs, FLOP/s and MFU.

    python benchmarks/predict_throughput.py --workdir=runs/synthfaces [--batch_size=64] \
        [--batches=10] [--dtype=bfloat16] [--files=128]
    python benchmarks/predict_throughput.py --config=configs/seed.py --batch_size=32   # no run needed

Device figure: the jitted, sharded aging of random uint8 batches to every group (after one
warm-up batch), with a trained run's EMA generator (``--workdir``) or a freshly initialised one
(``--config``: the speed does not depend on the weights). FLOPs per batch come from XLA's cost
analysis of the aging function (``faceaging.perf.flops``). End-to-end figure (``--workdir`` only): the whole
``predict`` path on a temporary folder of aligned 200x200 JPEGs (decode, age, write one PNG per
group and a grid each), compile included.
"""

import json
import os
import tempfile
import time

from absl import app, flags
import jax
from ml_collections import config_flags
import numpy as np
from PIL import Image

from faceaging import aging, mesh as mesh_lib, perf, predict, run as run_lib, schedules, train_state

config_flags.DEFINE_config_file("config", None, "Config file (random weights) instead of --workdir.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "A trained run.")
flags.DEFINE_integer("batch_size", 64, "Images per batch.")
flags.DEFINE_integer("batches", 10, "Timed batches for the device figure.")
flags.DEFINE_string("dtype", None, "Compute dtype override, e.g. bfloat16.")
flags.DEFINE_integer("files", 128, "JPEGs for the end-to-end figure (--workdir only).")
flags.DEFINE_string("json", None, "Append the device figures as one JSON line to this file.")


def _fresh_generator(config):
    """(generator graph, EMA params, schedule) of a newly initialised model of ``config``."""
    schedule = schedules.get_schedule(config.data.schedule)
    optimizers = train_state.make_optimizers(config)
    abstract, graphs = train_state.abstract_state(config, schedule.num_groups, optimizers)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state = train_state.create_train_state(config, schedule.num_groups, optimizers,
                                           train_state.state_shardings(abstract, sharding))
    return graphs.generator, state.ema_params["aging"], schedule


def main(_):
    f = flags.FLAGS
    if (f.config is None) == (f.workdir is None):
        raise app.UsageError("pass exactly one of --workdir (a trained run) or --config")
    if f.workdir:
        trained = run_lib.load(f.workdir)
        config, schedule, step = trained.config, trained.schedule, trained.step
        generator, params = trained.generator, trained.params("aging")
    else:
        config, step = f.config, 0
        generator, params, schedule = _fresh_generator(config)
    dtype = f.dtype or config.dtype
    ager = aging.Ager(generator, dtype, mesh_lib.make_mesh(config.mesh.num_devices))
    params = ager.place_params(params)
    codes = jax.numpy.asarray(np.eye(schedule.num_groups, dtype=np.float32))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (f.batch_size, config.image_size, config.image_size, 3), dtype=np.uint8)
    placed = ager.place_images(images)
    lowered, compiled, compile_s = perf.compile_timed(ager.age_all, params, placed, codes)
    perf.time_calls(lambda: compiled(params, placed, codes), 1)  # warm-up
    timing = perf.time_calls(lambda: compiled(params, placed, codes), f.batches)
    device = ager.mesh.devices.flat[0]
    rates = perf.rates(perf.flops(lowered), timing.mean, device, dtype, ager.mesh.size)
    n, k = f.batch_size, schedule.num_groups
    result = {"device": device.device_kind, "devices": ager.mesh.size, "step": step,
              "image_size": config.image_size, "groups": k, "batch": n, "dtype": dtype,
              "compile_s": compile_s, "input_img_per_s": n / timing.mean,
              "aged_img_per_s": n * k / timing.mean, "mean_ms": timing.mean * 1e3, **rates,
              "peak_memory_gb": None if (m := perf.peak_memory_bytes(device)) is None else m / 2 ** 30}
    mfu = "n/a" if rates["mfu"] is None else f"{100 * rates['mfu']:.1f}%"
    tflop = "n/a" if rates["tflop"] is None else f"{rates['tflop']:.3f}"
    tflops = "n/a" if rates["tflops"] is None else f"{rates['tflops']:.2f}"
    print(f"device | {device.device_kind} x{ager.mesh.size} | step {step} | {config.image_size}px x "
          f"{k} groups | batch {n} {dtype} | compile {compile_s:.1f}s | "
          f"{result['input_img_per_s']:.1f} input img/s ({result['aged_img_per_s']:.1f} aged img/s) "
          f"| {tflop} TFLOP/batch, {tflops} TFLOP/s, MFU {mfu}", flush=True)
    if f.json:
        with open(f.json, "a") as out:
            out.write(json.dumps({"label": "aging", **result}) + "\n")
    if not f.workdir:
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "in"))
        for i in range(f.files):
            Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(
                os.path.join(tmp, "in", f"{i:05d}.jpg"))
        start = time.perf_counter()
        # The inputs are aligned crops already: detection would find no face in noise.
        summary = predict.predict(f.workdir, os.path.join(tmp, "in"), os.path.join(tmp, "out"),
                                  batch_size=f.batch_size, dtype=f.dtype, aligned=True)
        seconds = time.perf_counter() - start
    if summary.failed or summary.done != f.files:
        raise RuntimeError(f"end-to-end: {summary.done} of {f.files} files aged, "
                           f"{summary.failed} failed: the figure would not be a throughput")
    print(f"end-to-end | {summary.done} files decoded, aged to {k} groups, {k + 1} PNGs each "
          f"written: {summary.done / seconds:.1f} img/s (includes compile)")


if __name__ == "__main__":
    app.run(main)
