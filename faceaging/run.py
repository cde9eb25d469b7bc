"""A trained run, as inference sees it: config, schedule, EMA generator weights, an ager.

``load(path)`` takes a workdir (latest checkpoint) or ``WORKDIR/checkpoints/STEP`` and restores
only the EMA parameters of the requested generators (a partial Orbax restore, like MaxText's
``load_params_from_path``): the discriminator, the raw generator weights and both Adam states
are never read. Predict, eval, ``--mode=all`` and the benchmarks start here; nothing here
imports the training loop.
"""

from __future__ import annotations

import dataclasses

from absl import logging
from flax import nnx
import jax
import ml_collections

from faceaging import aging, checkpointing, config as config_lib, mesh as mesh_lib, schedules
from faceaging import train_state, workdir as workdir_lib

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


def load_config(workdir: workdir_lib.Workdir) -> tuple[ml_collections.ConfigDict, list[str]]:
    """(config, fields filled from defaults) of the run in ``workdir``, saying which were filled."""
    config, filled = config_lib.load(workdir.config)
    if filled:
        logging.info("%s predates config fields %s: they take today's defaults",
                     workdir.config, ", ".join(filled))
    return config, filled


def load(path: str, step: int | None = None, generators=("aging",)) -> Run:
    """The run at ``path`` (a workdir, or ``WORKDIR/checkpoints/STEP``) with the EMA weights of
    ``generators`` (a subset of GENERATORS) of ``step`` (default: the path's, else the latest)."""
    workdir, path_step = resolve(path)
    step = path_step if step is None else step
    config, filled = load_config(workdir)
    schedule = schedules.get_schedule(config.data.schedule)
    abstract, graphs = train_state.abstract_state(config, schedule.num_groups,
                                                  train_state.make_optimizers(config))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    wanted = {name: params for name, params in abstract.ema_params.items() if name in generators}
    part, step = checkpointing.restore_params(
        workdir.checkpoints,
        {"ema_params": checkpointing.with_shardings(wanted, jax.tree.map(lambda _: device, wanted))},
        step)
    if part is None:
        raise NoCheckpointError(f"no checkpoint in {workdir.checkpoints}: train first")
    logging.info("Loaded EMA %s of step %d from %s", " and ".join(wanted), step, workdir.root)
    return Run(workdir=workdir, step=step, config=config, schedule=schedule,
               generator=graphs.generator, ema_params=part["ema_params"],
               defaults_filled=tuple(filled))
