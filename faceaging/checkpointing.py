"""Orbax checkpoints of the train state together with the grain iterator position.

Training saves and restores both items; inference restores only the parameters it needs
(``restore_params``, a partial restore that reads nothing else from disk).
"""

from __future__ import annotations

import os

from absl import logging
import grain
import jax
import orbax.checkpoint as ocp

STATE, DATA = "state", "data"  # the items of every checkpoint step


def make_manager(directory: str, keep: int | None = None,
                 read_only: bool = False) -> ocp.CheckpointManager:
    """A manager of the step folders in ``directory`` keeping the newest ``keep`` (None: all)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           read_only=read_only)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                 item_names=(STATE, DATA))


def with_shardings(abstract, shardings):
    """Abstract arrays that carry the shardings to restore into."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)


def save(manager: ocp.CheckpointManager, step: int, state, iterator, force: bool = False) -> bool:
    """Saves state and data position (asynchronously); returns whether a save was started."""
    return manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator)),
        force=force)


def _checked_step(manager: ocp.CheckpointManager, step: int | None) -> int | None:
    """``step`` if the manager holds it (FileNotFoundError otherwise); the latest for None."""
    if step is None:
        return manager.latest_step()
    if step not in manager.all_steps():
        raise FileNotFoundError(f"no checkpoint of step {step} in {manager.directory}; "
                                f"saved steps: {sorted(manager.all_steps())}")
    return step


def restore(manager: ocp.CheckpointManager, abstract_state, iterator=None, step: int | None = None):
    """The state saved at ``step`` (default: the latest), restoring ``iterator``'s position too
    when given; None if the manager holds no checkpoint."""
    step = _checked_step(manager, step)
    if step is None:
        return None
    items = {STATE: ocp.args.StandardRestore(abstract_state)}
    if iterator is not None:
        items[DATA] = grain.checkpoint.CheckpointRestore(iterator)
    logging.info("Restoring checkpoint of step %d from %s", step, manager.directory)
    return manager.restore(step, args=ocp.args.Composite(**items))[STATE]


def restore_params(directory: str, abstract_part: dict, step: int | None = None):
    """(part, step): only the subtree ``abstract_part`` of the state saved at ``step`` (default:
    the latest) in ``directory``, e.g. ``{"ema_params": {"aging": ...}}``; the rest of the state
    (other parameters, optimizer moments) and the data iterator are not read. (None, None) when
    ``directory`` holds no checkpoint."""
    manager = make_manager(directory, read_only=True)
    step = _checked_step(manager, step)
    if step is None:
        return None, None
    path = os.path.join(os.path.abspath(directory), str(step), STATE)
    logging.info("Restoring %s of step %d from %s", "/".join(abstract_part), step, directory)
    restored = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
        item=abstract_part, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_part),
        partial_restore=True))
    return restored, step
