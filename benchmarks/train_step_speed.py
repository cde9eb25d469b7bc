"""Train-step speed: compile time, ms/step, images/s, FLOPs/step, FLOP/s, MFU and peak memory.

    python benchmarks/train_step_speed.py --config=configs/synthfaces.py [--steps=32] \
        [--config.train.batch_size=16] [--json=results.jsonl]

Times the real jitted, sharded, donated train step on random uint8 batches (no input pipeline):
compile (lower + XLA compile) separately, then the first call, then ``--steps`` timed steps
after one warm-up. The timed window starts one step before a lazy-R1 step, so it always holds
both kinds of step; the reported mean weights them as training runs them (one R1 step in every
``config.loss.r1_every``), and the median (a step without R1) is printed too. The default
window is ``2 x r1_every`` steps; slow setups (the seed plan on CPU) can time fewer.
FLOPs/step are XLA's cost analysis of the step before optimisation, counted separately for a
step with R1 and one without (``make_train_step(r1='always'|'never')``) and averaged as
training runs them (one in ``r1_every``); MFU is against ``faceaging.perf.PEAK_TFLOPS``.
"""

import json
import os

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from faceaging import age_guide, mesh as mesh_lib, perf, schedules, steps, train_state

config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("steps", 0, "Timed steps (0: 2 x config.loss.r1_every); at least 2.")
flags.DEFINE_string("json", None, "Append the figures as one JSON line to this file.")
flags.DEFINE_string("label", "faceaging", "Name of this row in the JSON output.")


def random_batch(config, groups: int, sharding) -> dict:
    rng = np.random.default_rng(0)
    n, s = config.train.batch_size, config.image_size
    src = rng.integers(0, groups, n).astype(np.int32)
    return jax.device_put({"image": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
                           "source": src, "target": ((src + 1) % groups).astype(np.int32)},
                          sharding)


def measure(config, num_steps: int) -> dict:
    groups = schedules.get_schedule(config.data.schedule).num_groups
    mesh = mesh_lib.make_mesh(config.mesh.num_devices)
    optimizers = train_state.make_optimizers(config)
    abstract, graphs = train_state.abstract_state(config, groups, optimizers)
    shardings = train_state.state_shardings(abstract, mesh_lib.replicated(mesh))
    state = train_state.create_train_state(config, groups, optimizers, shardings)
    guides = age_guide.for_step(config, groups)  # guides in the loss: the same work, any weights
    jit_step = lambda r1: jax.jit(steps.make_train_step(config, graphs, optimizers, groups, r1=r1,
                                                        **guides),
                                  in_shardings=(shardings, mesh_lib.data_sharded(mesh)),
                                  donate_argnums=0)
    batch = random_batch(config, groups, mesh_lib.data_sharded(mesh))
    _, compiled, compile_s = perf.compile_timed(jit_step("lazy"), state, batch)
    flops_plain = perf.flops(jit_step("never").lower(state, batch))
    flops_r1 = perf.flops(jit_step("always").lower(state, batch))
    flops = None if flops_plain is None else (
        flops_plain + (flops_r1 - flops_plain) / config.loss.r1_every)

    holder = {"state": state}

    def one_step():
        holder["state"], metrics = compiled(holder["state"], batch)
        return metrics

    first = perf.time_calls(one_step, 1).seconds[0]
    perf.time_calls(one_step, 1)  # warm-up
    # Start the timed window one step before an R1 step, so that every window holds both kinds.
    k = config.loss.r1_every
    holder["state"] = holder["state"].replace(
        step=jax.device_put(jnp.asarray(k - 1, jnp.int32), mesh_lib.replicated(mesh)))
    timing = perf.time_calls(one_step, num_steps)
    is_r1 = [(k - 1 + i) % k == 0 for i in range(num_steps)]
    r1_times = [t for t, r in zip(timing.seconds, is_r1) if r]
    plain_times = [t for t, r in zip(timing.seconds, is_r1) if not r]
    # The mean as training runs it: one R1 step in every r1_every.
    mean = (np.mean(plain_times) * (k - 1) + np.mean(r1_times)) / k if plain_times else timing.mean
    device = mesh.devices.flat[0]
    result = {"device": device.device_kind, "devices": mesh.size, "image_size": config.image_size,
              "batch": config.train.batch_size, "dtype": config.dtype,
              "r1_every": config.loss.r1_every, "steps": num_steps,
              "tflop_no_r1": None if flops_plain is None else flops_plain / 1e12,
              "tflop_r1": None if flops_r1 is None else flops_r1 / 1e12,
              "compile_s": compile_s, "first_step_s": first,
              "mean_ms": mean * 1e3, "median_ms": timing.median * 1e3,
              "plain_ms": float(np.mean(plain_times)) * 1e3 if plain_times else None,
              "r1_ms": float(np.mean(r1_times)) * 1e3, "window_mean_ms": timing.mean * 1e3,
              "img_per_s": config.train.batch_size / mean,
              "img_per_s_median": config.train.batch_size / timing.median,
              "peak_memory_gb": _gb(perf.peak_memory_bytes(device)),
              "planned_memory_gb": _gb(perf.compiled_memory_bytes(compiled))}
    result.update(perf.rates(flops, mean, device, config.dtype, mesh.size))
    return result


def _gb(n):
    return None if n is None else n / 2 ** 30


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def report(r: dict) -> str:
    return (f"{r['device']} x{r['devices']} | image {r['image_size']} batch {r['batch']} "
            f"{r['dtype']} | compile {r['compile_s']:.1f}s, first step {r['first_step_s']:.2f}s | "
            f"mean {r['mean_ms']:.1f} ms/step (R1 every {r['r1_every']}: steps without R1 "
            f"{_fmt(r['plain_ms'], '.1f')}, with R1 {r['r1_ms']:.1f}; {r['steps']} timed), "
            f"median {r['median_ms']:.1f} | {r['img_per_s']:.2f} img/s (median-based "
            f"{r['img_per_s_median']:.2f}) | {_fmt(r['tflop'], '.3f')} TFLOP/step, "
            f"{_fmt(r['tflops'], '.2f')} TFLOP/s (step without R1 {_fmt(r['tflop_no_r1'], '.3f')}, "
            f"with R1 {_fmt(r['tflop_r1'], '.3f')} TFLOP), MFU "
            f"{'n/a' if r['mfu'] is None else format(100 * r['mfu'], '.1f') + '%'} | peak memory "
            f"{_fmt(r['peak_memory_gb'], '.2f')} GiB (planned {_fmt(r['planned_memory_gb'], '.2f')} GiB)")


def main(_):
    config = flags.FLAGS.config
    num_steps = max(2, flags.FLAGS.steps or 2 * config.loss.r1_every)
    result = measure(config, num_steps)
    print(report(result), flush=True)
    if flags.FLAGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(flags.FLAGS.json)), exist_ok=True)
        with open(flags.FLAGS.json, "a") as f:
            f.write(json.dumps({"label": flags.FLAGS.label, **result}) + "\n")


if __name__ == "__main__":
    app.run(main)
