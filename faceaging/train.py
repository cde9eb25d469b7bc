"""The training loop: ``train_and_evaluate(config, workdir)``."""

from __future__ import annotations

import contextlib
import signal
import time

from absl import logging
import jax
import ml_collections
import numpy as np

from faceaging import aging, checkpointing, config as config_lib, datasets, grids, input_pipeline
from faceaging import mesh as mesh_lib, schedules
from faceaging import steps, train_state, writer as writer_lib
from faceaging.workdir import Workdir


class NonFiniteLossError(RuntimeError):
    """Too many updates were skipped because a loss or gradient was not finite."""


@contextlib.contextmanager
def preemption_flag():
    """Yields a dict whose 'stop' turns True on SIGTERM, so the loop can checkpoint and exit."""
    flag = {"stop": False}

    def handler(signum, frame):
        del frame
        logging.warning("Received signal %d: saving a checkpoint and stopping.", signum)
        flag["stop"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def _mean_metrics(pending: list) -> dict:
    fetched = jax.device_get(pending)
    return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> train_state.TrainState:
    """Trains (resuming from ``workdir`` if it holds checkpoints) and returns the final state."""
    schedule = schedules.get_schedule(config.data.schedule)
    run_dir = Workdir(workdir)
    builder = datasets.prepare(config)  # fails before anything is written if data is missing
    mesh = mesh_lib.make_mesh(config.mesh.num_devices)
    mesh_lib.check_batch_size(config.train.batch_size, mesh)
    replicated, data_sharded = mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh)

    train_source = input_pipeline.open_split(builder, "train", schedule)
    if train_source is None:
        raise ValueError(f"{config.data.name!r} in {config.data.data_dir!r} has no train split")
    val_source = input_pipeline.open_split(builder, "validation", schedule)
    if val_source is None or len(val_source) == 0:
        logging.warning("No validation images: sample grids show training images.")
        val_source = train_source
    logging.info("Schedule %s (%d groups): %d training and %d validation images (%d training "
                 "images outside every group dropped).", schedule.name, schedule.num_groups,
                 len(train_source), len(val_source), train_source.num_dropped)
    iterator = iter(input_pipeline.make_train_loader(config, train_source, schedule.num_groups))

    optimizers = train_state.make_optimizers(config)
    abstract, graphs = train_state.abstract_state(config, schedule.num_groups, optimizers)
    shardings = train_state.state_shardings(abstract, replicated)
    manager = checkpointing.make_manager(run_dir.checkpoints, config.train.keep_checkpoints)
    state = checkpointing.restore(
        manager, checkpointing.with_shardings(abstract, shardings), iterator)
    if state is None:
        state = train_state.create_train_state(config, schedule.num_groups, optimizers, shardings)
    if jax.process_index() == 0:
        config_lib.save(config, run_dir.config)

    train_step = jax.jit(
        steps.make_train_step(config, graphs, optimizers, schedule.num_groups),
        in_shardings=(shardings, data_sharded), out_shardings=(shardings, replicated),
        donate_argnums=0)
    ager = aging.Ager(graphs.generator, config.dtype, mesh)
    samples = input_pipeline.sample_batch(val_source, config.data.num_sample_images,
                                          config.image_size)
    group_codes = np.eye(schedule.num_groups, dtype=np.float32)

    writer = writer_lib.MetricWriter(run_dir.tensorboard)
    step = int(state.step)
    logging.info("Training from step %d to %d on %d device(s), global batch %d.", step,
                 config.train.steps, mesh.size, config.train.batch_size)
    pending, last_time, last_step = [], time.perf_counter(), step
    with preemption_flag() as preempted:
        while step < config.train.steps:
            batch = input_pipeline.to_global(next(iterator), data_sharded)
            state, metrics = train_step(state, batch)
            step += 1
            pending.append(metrics)
            last = step == config.train.steps
            if step % config.train.log_every == 0 or last:
                scalars = _mean_metrics(pending)
                now = time.perf_counter()
                scalars["steps_per_second"] = (step - last_step) / (now - last_time)
                scalars["images_per_second"] = scalars["steps_per_second"] * config.train.batch_size
                writer.scalars(step, scalars)
                pending, last_time, last_step = [], now, step
                if scalars["nonfinite_steps"] > config.train.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"{int(scalars['nonfinite_steps'])} updates had non-finite losses or "
                        f"gradients (more than config.train.max_nonfinite_steps="
                        f"{config.train.max_nonfinite_steps}); the last good checkpoint is in "
                        f"{run_dir.checkpoints}. Lower the learning rates or use "
                        "config.dtype='float32'.")
            if step % config.train.sample_every == 0 or last:
                aged = ager(state.ema_params["aging"], samples["image"], group_codes)
                grid = grids.aging_grid(samples["image"], aged, schedule.labels)
                writer.image(step, "samples/aging_grid", grid)
                if jax.process_index() == 0:
                    grids.save_png(grid, run_dir.sample_grid(step))
            stop = preempted["stop"] or manager.reached_preemption(step)
            if step % config.train.checkpoint_every == 0 or last or stop:
                checkpointing.save(manager, step, state, iterator, force=True)
            if stop:
                logging.warning("Stopped at step %d after a preemption signal.", step)
                break
    manager.wait_until_finished()
    writer.close()
    return state
