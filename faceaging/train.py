"""The training loop: ``train_and_evaluate(config, workdir)``.

Before any work the config is checked (``config_checks``) and the workdir locked
(``workdir_lock``). A resumed run restores the newest checkpoint that restores, refuses one
saved with an incompatible config or for other data (``ResumeOptions`` says what to accept),
and stops cleanly: on SIGTERM/SIGINT it saves the current step and raises
``stopping.Preempted``; on a streak of skipped (non-finite) updates it raises
``NonFiniteLossError`` without checkpointing the skipping steps; a failed asynchronous save is
noticed at the next step. Whatever ends the loop, an in-flight save is waited for.
"""

from __future__ import annotations

import dataclasses
import time

from absl import logging
import jax
import ml_collections
import numpy as np

from faceaging import age_guide, aging, checkpointing, config as config_lib, config_checks, datasets, grids
from faceaging import input_pipeline, mesh as mesh_lib, schedules, steps, stopping, train_state
from faceaging import workdir_lock, writer as writer_lib
from faceaging.workdir import Workdir


class NonFiniteLossError(RuntimeError):
    """Too many consecutive updates were skipped because something was not finite."""


class ConfigChanged(checkpointing.ResumeRefused):
    """The config differs from the checkpoint's in a way that was not accepted."""


@dataclasses.dataclass(frozen=True)
class ResumeOptions:
    """How to resume (the command line's --restore_step, --reset_data_iterator,
    --allow_config_changes and --break_lock)."""

    restore_step: int | None = None  # None: the newest step that restores
    reset_data_iterator: bool = False  # keep the train state, ignore the saved data position
    allow_config_changes: bool = False  # accept changed learning rates, loss weights, batch...
    break_lock: bool = False  # take the workdir's lock from a trainer known to be gone


def config_checker(config: ml_collections.ConfigDict, run_dir: Workdir, allow_changes: bool):
    """``check(saved, step)`` for ``checkpointing.restore``: refuses a checkpoint whose config
    (or, for older checkpoints, config.json) differs incompatibly, or in fields that need
    ``allow_changes``; logs the accepted differences."""

    def check(saved: dict | None, step: int) -> None:
        if saved is None:
            try:
                saved = config_lib.read_dict(run_dir.config)
            except FileNotFoundError:
                return
        changes = config_checks.resume_changes(saved, config)
        where = f"the checkpoint of step {step} in {run_dir.checkpoints}"
        if changes["incompatible"]:
            raise ConfigChanged(
                f"cannot resume {where}: these fields change the model's shapes or the meaning "
                f"of its age groups: {'; '.join(changes['incompatible'])}. Train in a new "
                "--workdir, or set them back.")
        if changes["needs_permission"] and not allow_changes:
            raise ConfigChanged(
                f"{where} was trained with a different config: "
                f"{'; '.join(changes['needs_permission'])}. Pass --allow_config_changes to resume "
                "with these changes, or set them back.")
        accepted = changes["needs_permission"] + changes["free"]
        if accepted:
            logging.warning("Resuming %s with changed config fields: %s", where, "; ".join(accepted))

    return check


def data_checker(num_records: int, manager):
    """``check(saved_data_state, step)`` for ``checkpointing.restore``: refuses a data position
    saved for a different number of training records (the dataset was rebuilt)."""

    def check(saved: dict, step: int) -> None:
        problem = input_pipeline.data_order_problem(saved, num_records)
        if problem:
            raise checkpointing.DataOrderChanged(
                f"the checkpoint of step {step} in {manager.directory} was saved for different "
                f"training data ({problem}). To keep the trained state and continue at this "
                "step's position in the current data's order, pass --reset_data_iterator; otherwise restore the data the run was "
                "trained with.")

    return check


class SkippedUpdates:
    """The streak of consecutive skipped updates, from the per-step ``skipped`` metric."""

    def __init__(self, limit: int):
        self.limit = limit
        self.streak = 0
        self._unseen = []

    def add(self, skipped) -> None:
        """Records a step's ``skipped`` metric (a device scalar: not fetched yet)."""
        self._unseen.append(skipped)

    def update(self) -> int:
        """Fetches the recorded metrics; returns the current streak."""
        for skipped in jax.device_get(self._unseen):
            self.streak = self.streak + 1 if skipped else 0
        self._unseen = []
        return self.streak


SHUT_GATE = 1e-4  # a mean output-gate opening below this passes the input through unchanged


def shut_gate_warning(scalars: dict, step: int, config: ml_collections.ConfigDict) -> str | None:
    """A warning when the generator's output gate (``model.output_mask``) has shut: its mean
    opening (``g/gate_opening``, or ``g/gate`` at gate exponent 1) is below ``SHUT_GATE``, so the
    aged images are the (warped) input whatever the target age."""
    opening = scalars.get("g/gate_opening", scalars.get("g/gate"))
    if opening is None or opening >= SHUT_GATE:
        return None
    hint = ("raise config.loss.gate_floor (e.g. 0.05: losses.gate_opening)"
            if config.loss.gate_exponent < 1 else "lower config.loss.gate")
    return (f"Step {step}: the output gate has shut (mean opening {opening:.1e}): the generator "
            f"returns its input whatever the target age, and a gate cost with "
            f"loss.gate_exponent={config.loss.gate_exponent} and loss.gate_floor="
            f"{config.loss.gate_floor} keeps it shut; {hint} and train again from scratch.")


def _mean_metrics(pending: list) -> dict:
    fetched = jax.device_get(pending)
    return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       resume: ResumeOptions = ResumeOptions()) -> train_state.TrainState:
    """Trains (resuming from ``workdir`` if it holds checkpoints) and returns the final state."""
    config_checks.check(config, jax.device_count(), jax.process_count())
    with workdir_lock.hold(workdir, resume.break_lock), stopping.StopRequests() as stop_requests:
        return _train(config, Workdir(workdir), resume, stop_requests)


def _train(config: ml_collections.ConfigDict, run_dir: Workdir, resume: ResumeOptions,
           stop_requests: stopping.StopRequests) -> train_state.TrainState:
    schedule = schedules.get_schedule(config.data.schedule)
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

    optimizers = train_state.make_optimizers(config)
    abstract, graphs = train_state.abstract_state(config, schedule.num_groups, optimizers)
    shardings = train_state.mesh_shardings(abstract, mesh, config.mesh.fsdp)
    logging.info("Train state: %.2f MiB per device (%s).",
                 train_state.bytes_per_device(abstract, shardings) / 2**20,
                 "FSDP: split over the devices" if config.mesh.fsdp else "replicated")
    manager = checkpointing.make_manager(run_dir.checkpoints, config.train.keep_checkpoints)
    state, restored_step, data_state = checkpointing.restore(
        manager, checkpointing.with_shardings(abstract, shardings), step=resume.restore_step,
        check_config=config_checker(config, run_dir, resume.allow_config_changes),
        check_data=None if resume.reset_data_iterator else data_checker(len(train_source), manager))
    if state is None:
        state = train_state.create_train_state(config, schedule.num_groups, optimizers, shardings)
    elif resume.reset_data_iterator:
        logging.warning("Resuming step %d with the data order of the current dataset "
                        "(--reset_data_iterator).", restored_step)
    start = (data_state["position"] if data_state
             else (restored_step or 0) * config.train.batch_size)
    iterator = input_pipeline.make_train_loader(config, train_source, schedule.num_groups,
                                                start=start)
    config_dict = config_lib.to_dict(config)
    if jax.process_index() == 0:
        config_lib.save(config, run_dir.config)

    guides = age_guide.for_step(config, schedule.num_groups, run_dir.root,
                                stop_requests.check_before_the_loop)
    train_step = jax.jit(
        steps.make_train_step(config, graphs, optimizers, schedule.num_groups, **guides),
        in_shardings=(shardings, data_sharded), out_shardings=(shardings, replicated),
        donate_argnums=0)
    ager = aging.Ager(graphs.generator, config.dtype, mesh)
    samples = input_pipeline.sample_batch(val_source, config.data.num_sample_images,
                                          config.image_size)
    group_codes = np.eye(schedule.num_groups, dtype=np.float32)

    writer = writer_lib.MetricWriter(run_dir.tensorboard)
    skipped = SkippedUpdates(config.train.max_nonfinite_steps)
    step = int(state.step)
    logging.info("Training from step %d to %d on %d device(s), global batch %d.", step,
                 config.train.steps, mesh.size, config.train.batch_size)
    pending, last_time, last_step = [], time.perf_counter(), step
    gate_warned = False  # once per run
    try:
        while step < config.train.steps:
            batch = input_pipeline.to_global(next(iterator), data_sharded)
            state, metrics = train_step(state, batch)
            step += 1
            pending.append(metrics)
            skipped.add(metrics["skipped"])
            checkpointing.check_save_errors(manager)
            last = step == config.train.steps
            if step % config.train.log_every == 0 or last:
                scalars = _mean_metrics(pending)
                now = time.perf_counter()
                scalars["steps_per_second"] = (step - last_step) / (now - last_time)
                scalars["images_per_second"] = scalars["steps_per_second"] * config.train.batch_size
                writer.scalars(step, scalars)
                pending, last_time, last_step = [], now, step
                if not gate_warned and (warning := shut_gate_warning(scalars, step, config)):
                    logging.warning(warning)
                    gate_warned = True
                _check_streak(skipped, step, manager)
            if step % config.train.sample_every == 0 or last:
                aged = ager(state.ema_params["aging"], samples["image"], group_codes)
                grid = grids.aging_grid(samples["image"], aged, schedule.labels)
                writer.image(step, "samples/aging_grid", grid)
                if jax.process_index() == 0:
                    grids.save_png(grid, run_dir.sample_grid(step))
            stop = stop_requests.requested(step, manager)
            if step % config.train.checkpoint_every == 0 or last or stop:
                if _check_streak(skipped, step, manager) == 0:
                    checkpointing.save(manager, step, state, iterator.state(), config_dict,
                                       force=True)
                else:
                    logging.warning("Not saving step %d: its update was skipped (the last %d "
                                    "were).", step, skipped.streak)
            if stop:
                manager.wait_until_finished()
                checkpointing.check_save_errors(manager)
                raise stopping.Preempted(manager.latest_step() or 0, stop_requests.reason)
        manager.wait_until_finished()
        checkpointing.check_save_errors(manager)
    finally:
        _finish(manager, writer)
    return state


def _check_streak(skipped: SkippedUpdates, step: int, manager) -> int:
    """The streak of skipped updates up to ``step``; raises once it exceeds the limit."""
    streak = skipped.update()
    if streak > skipped.limit:
        raise NonFiniteLossError(
            f"the last {streak} updates (to step {step}) were skipped: their losses, gradients or "
            f"parameters were not finite (config.train.max_nonfinite_steps={skipped.limit} in a "
            f"row allowed). The last good checkpoint is step {manager.latest_step()} in "
            f"{manager.directory}; lower the learning rates or use config.dtype='float32', then "
            "run again to resume from it.")
    return streak


def _finish(manager, writer) -> None:
    """Waits for an in-flight save and closes the manager and the writer, whatever happened."""
    try:
        manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  (already failing: report, go on)
        logging.error("A checkpoint save failed while stopping: %s", e)
    finally:
        checkpointing.remove_unfinished(str(manager.directory))
        manager.close()
        writer.close()
