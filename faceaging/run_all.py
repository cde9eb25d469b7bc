"""``--mode=all``: prepare the data, train, then age held-out faces into one grid."""

from __future__ import annotations

import os

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from faceaging import datasets, grids, input_pipeline, predict, schedules, steps, train


def held_out_faces(config: ml_collections.ConfigDict, count: int) -> np.ndarray:
    """The first ``count`` validation images (held out from training), decoded at image_size."""
    builder = datasets.prepare(config)
    schedule = schedules.get_schedule(config.data.schedule)
    source = input_pipeline.open_split(builder, input_pipeline.held_out_split(builder), schedule)
    return input_pipeline.sample_batch(source, count,
                                       config.image_size)["image"]


def run_all(config: ml_collections.ConfigDict, workdir: str, count: int = 8) -> str:
    """Trains (resuming if possible), ages ``count`` held-out faces to every group; returns the grid path."""
    train.train_and_evaluate(config, workdir)
    config, schedule, graphs, params, _ = predict.load_ema_generator(workdir)
    faces = held_out_faces(config, count)
    age_all = jax.jit(steps.make_age_all_groups(graphs, jnp.dtype(config.dtype)))
    aged = np.asarray(age_all(params, faces, jnp.eye(schedule.num_groups)))
    path = os.path.join(workdir, "held_out_aging.png")
    grids.save_png(grids.aging_grid(faces, aged, schedule.labels), path)
    logging.info("Aging grid of %d held-out faces: %s", len(faces), path)
    return path
