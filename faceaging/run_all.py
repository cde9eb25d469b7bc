"""``--mode=all``: prepare the data, train, then age held-out faces into one grid."""

from __future__ import annotations

from absl import logging
import ml_collections
import numpy as np

from faceaging import datasets, grids, input_pipeline, run as run_lib, train


def held_out_faces(trained: run_lib.Run, count: int) -> np.ndarray:
    """The first ``count`` validation images (held out from training), decoded at image_size."""
    builder = datasets.prepare(trained.config)
    source = input_pipeline.open_split(builder, input_pipeline.held_out_split(builder),
                                       trained.schedule)
    return input_pipeline.sample_batch(source, count, trained.config.image_size)["image"]


def run_all(config: ml_collections.ConfigDict, workdir: str, count: int = 8) -> str:
    """Trains (resuming if possible), ages ``count`` held-out faces to every group; returns the grid path."""
    train.train_and_evaluate(config, workdir)
    trained = run_lib.load(workdir)
    faces = held_out_faces(trained, count)
    ager = trained.ager(num_devices=1)
    aged = ager(ager.place_params(trained.params("aging")), faces,
                np.eye(trained.schedule.num_groups, dtype=np.float32))
    path = trained.workdir.held_out_grid
    grids.save_png(grids.aging_grid(faces, aged, trained.schedule.labels), path)
    logging.info("Aging grid of %d held-out faces: %s", len(faces), path)
    return path
