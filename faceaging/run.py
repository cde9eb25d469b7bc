"""A trained run, as inference sees it: config, schedule, EMA generator weights, an ager.

``load(path)`` takes a workdir (latest checkpoint) or ``WORKDIR/checkpoints/STEP`` and restores
only the EMA parameters of the requested generators (a partial Orbax restore, like MaxText's
``load_params_from_path``): the discriminator, the raw generator weights and both Adam states
are never read. Predict, eval, ``--mode=all`` and the benchmarks start here; nothing here
imports the training loop.
"""

from __future__ import annotations

import dataclasses
import time

from absl import logging
from flax import nnx
import jax
import ml_collections

from faceaging import aging, checkpointing, config as config_lib, mesh as mesh_lib, schedules
from faceaging import files, train_state, workdir as workdir_lib

GENERATORS = ("aging", "restoring")


class NoCheckpointError(FileNotFoundError):
    """The workdir holds a config but no checkpoint yet."""


@dataclasses.dataclass(frozen=True)
class Run:
    workdir: workdir_lib.Workdir
    step: int
    config: ml_collections.ConfigDict  # as trained (read it, never edit it)
    schedule: schedules.AgeSchedule
    generator: nnx.GraphDef  # both generators share this graph
    ema_params: dict  # {'aging': State[, 'restoring': State]}: the EMA weights that were loaded
    defaults_filled: tuple[str, ...]  # config fields missing from the run's config.json

    def params(self, name: str = "aging"):
        """EMA parameters of generator ``name`` (the aging one's when weights are shared)."""
        if name == "restoring":
            return train_state.restoring_params(self.ema_params)
        return self.ema_params[name]

    def ager(self, num_devices: int = -1, dtype: str | None = None) -> aging.Ager:
        """An ``aging.Ager`` of this run's generator over ``num_devices`` devices (-1: all), in
        ``dtype`` (default: the run's compute dtype)."""
        return aging.Ager(self.generator, dtype or self.config.dtype, mesh_lib.make_mesh(num_devices))


def resolve(path: str) -> tuple[workdir_lib.Workdir, int | None]:
    """(workdir, step or None for the latest) of a workdir or a ``WORKDIR/checkpoints/STEP`` path."""
    try:
        return workdir_lib.of_checkpoint(path)
    except ValueError:
        return workdir_lib.Workdir(path), None


def load_config(workdir: workdir_lib.Workdir, saved: dict | None = None
                ) -> tuple[ml_collections.ConfigDict, list[str]]:
    """(config, fields filled from defaults) of the run in ``workdir``: ``saved`` (the config a
    checkpoint holds) when given, else the workdir's config.json; says which fields were filled."""
    if saved is None:
        source = workdir.config
        config, filled = config_lib.load(source)
    else:
        source = "the checkpoint's config"
        config, filled = config_lib.from_dict(saved)
    if filled:
        logging.info("%s predates config fields %s: they take today's defaults",
                     source, ", ".join(filled))
    return config, filled


READ_ATTEMPTS = 8  # a trainer that keeps few checkpoints may delete the step being read


def _load_step(workdir: workdir_lib.Workdir, manager, step: int, generators) -> Run:
    config, filled = load_config(workdir, checkpointing.saved_config(manager, step))
    schedule = schedules.get_schedule(config.data.schedule)
    abstract, graphs = train_state.abstract_state(config, schedule.num_groups,
                                                  train_state.make_optimizers(config))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    wanted = {name: params for name, params in abstract.ema_params.items() if name in generators}
    part = checkpointing.restore_params(
        manager,
        {"ema_params": checkpointing.with_shardings(wanted, jax.tree.map(lambda _: device, wanted))},
        step)
    logging.info("Loaded EMA %s of step %d from %s", " and ".join(wanted), step, workdir.root)
    return Run(workdir=workdir, step=step, config=config, schedule=schedule,
               generator=graphs.generator, ema_params=part["ema_params"],
               defaults_filled=tuple(filled))


def load(path: str, step: int | None = None, generators=("aging",)) -> Run:
    """The run at ``path`` (a workdir, or ``WORKDIR/checkpoints/STEP``) with the EMA weights of
    ``generators`` (a subset of GENERATORS) of ``step`` (default: the path's, else the latest),
    with the config that step was saved with (config.json for older checkpoints).

    The latest step is read even while a trainer is saving: only finished steps are listed, and
    if the trainer deletes the step being read (``keep_checkpoints``), the newest is read again.
    """
    workdir, path_step = resolve(path)
    step = path_step if step is None else step
    if not files.isfile(workdir.config) and not files.isdir(workdir.checkpoints):
        config_lib.load(workdir.config)  # FileNotFoundError: no run there at all
    for attempt in range(1, READ_ATTEMPTS + 1):
        manager = checkpointing.read_only_manager(workdir.checkpoints)
        chosen = manager.latest_step() if step is None else step
        if chosen is None:
            raise NoCheckpointError(f"no checkpoint in {workdir.checkpoints}: train first")
        try:
            return _load_step(workdir, manager, chosen, generators)
        except Exception as e:  # pylint: disable=broad-except
            if step is not None or attempt == READ_ATTEMPTS:
                raise
            logging.warning("Reading step %d failed (%s: %s); reading the newest step again, in "
                            "case a trainer replaced it.", chosen, type(e).__name__, e)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")
