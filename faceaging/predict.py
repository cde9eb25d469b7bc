"""Ages images with the EMA generator of the latest checkpoint in a workdir.

For every input image it writes one PNG per target age group and a labelled
grid (input + every group). The run's own ``config.json`` decides the image size
and schedule. Existing outputs are never replaced unless ``overwrite``.
"""

from __future__ import annotations

import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from faceaging import checkpointing, grids, input_pipeline, mesh as mesh_lib, schedules, steps
from faceaging import train, train_state

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class PredictError(ValueError):
    """Bad predict input or workdir."""


def list_inputs(path: str) -> list[tuple[str, str]]:
    """(absolute path, path relative to the input root) of every image under ``path``."""
    if os.path.isfile(path):
        return [(os.path.abspath(path), os.path.basename(path))]
    if not os.path.isdir(path):
        raise PredictError(f"--input {path!r} is neither an image file nor a folder")
    found = sorted((os.path.join(root, n), os.path.relpath(os.path.join(root, n), path))
                   for root, _, names in os.walk(path) for n in names
                   if n.lower().endswith(IMAGE_SUFFIXES))
    if not found:
        raise PredictError(f"--input {path!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def output_paths(output_dir: str, relative: str, labels) -> dict:
    stem = os.path.join(output_dir, os.path.splitext(relative)[0])
    return {"groups": [f"{stem}_age_{label}.png" for label in labels], "grid": f"{stem}_grid.png"}


def load_ema_generator(workdir: str):
    """(config, schedule, graphs, EMA params of the aging generator) of the latest checkpoint."""
    config = train.load_config(workdir)
    schedule = schedules.get_schedule(config.data.schedule)
    abstract, graphs = train_state.abstract_state(config, schedule.num_groups,
                                                  train_state.make_optimizers(config))
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    manager = checkpointing.make_manager(workdir, read_only=True)
    state = checkpointing.restore_latest(
        manager, checkpointing.with_shardings(abstract, train_state.state_shardings(abstract, sharding)))
    if state is None:
        raise PredictError(f"no checkpoint in {checkpointing.checkpoint_dir(workdir)}: train first")
    logging.info("Loaded EMA generator of step %d from %s", int(state.step), workdir)
    return config, schedule, graphs, state.ema_params["aging"]


def predict(workdir: str, input_path: str, output_dir: str, overwrite: bool = False) -> dict:
    """Ages every image under ``input_path`` to every group; returns {'done', 'failed'} counts."""
    inputs = list_inputs(input_path)
    config, schedule, graphs, params = load_ema_generator(workdir)
    plans = [(src, output_paths(output_dir, rel, schedule.labels)) for src, rel in inputs]
    existing = [p for _, out in plans for p in [*out["groups"], out["grid"]] if os.path.exists(p)]
    if existing and not overwrite:
        raise PredictError(f"{len(existing)} output file(s) already exist, e.g. {existing[0]!r}; "
                           "pass --overwrite to replace them or choose another --output_dir")
    age_all = jax.jit(steps.make_age_all_groups(graphs, jnp.dtype(config.dtype)))
    codes = jnp.eye(schedule.num_groups)
    done = failed = 0
    for start in range(0, len(plans), config.train.batch_size):
        chunk, images = [], []
        for src, out in plans[start:start + config.train.batch_size]:
            try:
                with open(src, "rb") as f:
                    images.append(input_pipeline.decode_image(f.read(), config.image_size))
                chunk.append(out)
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                logging.error("%s: skipped, not a readable image (%s)", src, e)
                failed += 1
        if not images:
            continue
        batch = np.stack(images)
        aged = np.asarray(age_all(params, batch, codes))
        for i, out in enumerate(chunk):
            for k, path in enumerate(out["groups"]):
                grids.save_png(aged[i, k], path)
            grids.save_png(grids.aging_grid(batch[i:i + 1], aged[i:i + 1], schedule.labels),
                           out["grid"])
            done += 1
    logging.info("Aged %d image(s) into %s; %d failed.", done, output_dir, failed)
    return {"done": done, "failed": failed}
