"""Orbax checkpoints of the train state together with the grain iterator position."""

from __future__ import annotations

import os

from absl import logging
import grain
import jax
import ml_collections
import orbax.checkpoint as ocp


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, config: ml_collections.ConfigDict | None = None,
                 read_only: bool = False) -> ocp.CheckpointManager:
    keep = config.train.keep_checkpoints if config is not None else None
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           read_only=read_only)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_names=("state", "data"))


def with_shardings(abstract, shardings):
    """Abstract arrays that carry the shardings to restore into."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)


def save(manager: ocp.CheckpointManager, step: int, state, iterator, force: bool = False) -> bool:
    """Saves state and data position (asynchronously); returns whether a save was started."""
    return manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator)),
        force=force)


def restore(manager: ocp.CheckpointManager, abstract_state, iterator=None, step: int | None = None):
    """The state saved at ``step`` (default: the latest), restoring ``iterator``'s position too
    when given; None if the manager holds no checkpoint."""
    if step is None:
        step = manager.latest_step()
        if step is None:
            return None
    elif step not in manager.all_steps():
        raise FileNotFoundError(f"no checkpoint of step {step} in {manager.directory}; "
                                f"saved steps: {sorted(manager.all_steps())}")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    logging.info("Restoring checkpoint of step %d from %s", step, manager.directory)
    return manager.restore(step, args=ocp.args.Composite(**items))["state"]
