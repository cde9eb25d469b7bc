"""Orbax checkpoints of the train state, the grain iterator position and the config.

Training saves all three items and restores with a fallback: a step that does not restore
(truncated files, a missing ``_METADATA``, an emptied iterator JSON) is reported and moved to
``WORKDIR/checkpoints_set_aside/``, and the newest earlier step that restores is used; nothing is
deleted. Inference restores only the parameters it needs (``restore_params``, a partial restore
that reads nothing else from disk), retrying when a concurrent trainer deletes the step it read.
"""

from __future__ import annotations

import os
import shutil
import time

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

STATE, DATA, CONFIG = "state", "data", "config"  # the items of every checkpoint step
TMP_MARKER = ".orbax-checkpoint-tmp"  # in the names of Orbax's unfinished step folders
SET_ASIDE = "checkpoints_set_aside"  # beside checkpoints/: steps that were not restored


class CheckpointError(RuntimeError):
    """A checkpoint could not be restored or written; the message says which and why."""


class ResumeRefused(CheckpointError):
    """The checkpoint is intact but does not fit this run (its data or its config changed)."""


class DataOrderChanged(ResumeRefused):
    """The training data (record count, shuffling, workers) differs from the checkpoint's."""


def make_manager(directory: str, keep: int | None = None,
                 read_only: bool = False) -> ocp.CheckpointManager:
    """A manager of the step folders in ``directory`` keeping the newest ``keep`` (None: all);
    a writing manager removes unfinished step folders an earlier run left behind."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           read_only=read_only,
                                           cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                 item_names=(STATE, DATA, CONFIG))


def with_shardings(abstract, shardings):
    """Abstract arrays that carry the shardings to restore into."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)


def save(manager: ocp.CheckpointManager, step: int, state, iterator, config_dict: dict,
         force: bool = False) -> bool:
    """Saves state, data position and config (asynchronously); returns whether a save started.
    A failure of this or the previous save raises ``CheckpointError`` (see ``check_save_errors``)."""
    try:
        return manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator),
            config=ocp.args.JsonSave(config_dict)), force=force)
    except Exception as e:  # pylint: disable=broad-except
        raise _write_failed(manager, e) from e


def _first_line(error: BaseException, limit: int = 300) -> str:
    """The error's type and first line without tensorstore's spec dump; past ``limit`` chars, its
    start and its end (where tensorstore puts the cause, e.g. "No space left on device")."""
    lines = str(error).strip().splitlines()
    text = lines[0].split(" [tensorstore_spec=")[0] if lines else ""
    text = f"{type(error).__name__}: {text}".strip()
    half = (limit - 5) // 2
    return text if len(text) <= limit else f"{text[:half]} ... {text[-half:]}"


def _write_failed(manager: ocp.CheckpointManager, error: BaseException) -> CheckpointError:
    removed = remove_unfinished(str(manager.directory))
    manager.reload()
    return CheckpointError(
        f"writing a checkpoint to {manager.directory} failed ({_first_line(error)}); removed the "
        f"unfinished folder(s) {', '.join(removed) or 'none'}; the newest complete checkpoint is "
        f"step {manager.latest_step()}")


def check_save_errors(manager: ocp.CheckpointManager) -> None:
    """Raises ``CheckpointError`` (one line) if a finished asynchronous save failed, after
    removing its unfinished folder; the newest complete step is left as it was."""
    try:
        manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
        raise _write_failed(manager, e) from e


def remove_unfinished(directory: str) -> list[str]:
    """Deletes Orbax's unfinished step folders in ``directory`` (process 0); returns their names."""
    if jax.process_index() != 0 or not os.path.isdir(directory):
        return []
    names = sorted(n for n in os.listdir(directory) if TMP_MARKER in n)
    for name in names:
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    return names


def has_item(manager: ocp.CheckpointManager, step: int, item: str) -> bool:
    return os.path.isdir(os.path.join(str(manager.directory), str(step), item))


def saved_config(manager: ocp.CheckpointManager, step: int) -> dict | None:
    """The config (a JSON dict) saved in ``step``; None for checkpoints written before configs
    were saved in them."""
    if not has_item(manager, step, CONFIG):
        return None
    return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))[CONFIG]


def _checked_step(manager: ocp.CheckpointManager, step: int | None) -> int | None:
    """``step`` if the manager holds it (FileNotFoundError otherwise); the latest for None."""
    if step is None:
        return manager.latest_step()
    if step not in manager.all_steps():
        raise FileNotFoundError(f"no checkpoint of step {step} in {manager.directory}; "
                                f"saved steps: {sorted(manager.all_steps())}")
    return step


def set_aside(manager: ocp.CheckpointManager, steps, reason: str) -> list[str]:
    """Moves step folders out of the manager's directory into ``checkpoints_set_aside/`` beside
    it (never deleting them), so training can carry on from an earlier step."""
    moved = []
    if jax.process_index() == 0:
        directory = str(manager.directory)
        target_root = os.path.join(os.path.dirname(directory), SET_ASIDE)
        os.makedirs(target_root, exist_ok=True)
        for step in sorted(steps):
            target = os.path.join(target_root, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
            os.rename(os.path.join(directory, str(step)), target)
            moved.append(target)
            logging.warning("Moved the checkpoint of step %d to %s (%s)", step, target, reason)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("faceaging: checkpoints set aside")
    manager.reload()
    return moved


def _is_data_mismatch(error: BaseException) -> bool:
    """grain's refusal of an iterator state saved for other data (not a damaged file)."""
    return isinstance(error, ValueError) and " does not match " in str(error)


def restore_iterator(manager: ocp.CheckpointManager, step: int, iterator) -> None:
    """Moves ``iterator`` to the position saved in ``step``; ``DataOrderChanged`` when the
    checkpoint was saved for other data."""
    try:
        manager.restore(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(iterator)))
    except ValueError as e:
        if not _is_data_mismatch(e):
            raise
        detail = " ".join(str(e).splitlines()[:3])
        raise DataOrderChanged(
            f"the checkpoint of step {step} in {manager.directory} was saved for different "
            f"training data or loader settings ({detail}). To keep the trained state and start "
            "a fresh data order, pass --reset_data_iterator; otherwise restore the data (and "
            "config.data.worker_count) the run was trained with.") from e


def restore(manager: ocp.CheckpointManager, abstract_state, iterator=None, step: int | None = None,
            check_config=None):
    """(state, step) of the newest step that restores (``step`` only, if given), moving
    ``iterator`` to its saved position when given; (None, None) if there is no checkpoint.

    ``check_config(saved_config_or_None, step)`` runs before a step's arrays are read and may
    raise ``ResumeRefused`` to refuse it. A latest step that does not restore is set aside (see ``set_aside``)
    and the previous one tried; an explicit ``step`` that does not restore raises
    ``CheckpointError``. Steps after the one restored are set aside too, since training from
    it would write over them.
    """
    steps = [_checked_step(manager, step)] if step is not None else sorted(manager.all_steps(),
                                                                             reverse=True)
    failed = []
    for candidate in steps:
        logging.info("Restoring checkpoint of step %d from %s", candidate, manager.directory)
        try:
            if check_config is not None:
                check_config(saved_config(manager, candidate), candidate)
            state = manager.restore(candidate, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state)))[STATE]
            if iterator is not None:
                restore_iterator(manager, candidate, iterator)
        except ResumeRefused:
            raise
        except Exception as e:  # pylint: disable=broad-except  (any damage: try the previous step)
            reason = _first_line(e)
            if step is not None:
                raise CheckpointError(f"the checkpoint of step {candidate} in {manager.directory} "
                                      f"cannot be restored ({reason})") from e
            logging.warning("The checkpoint of step %d cannot be restored (%s); trying the "
                            "previous step.", candidate, reason)
            failed.append(f"step {candidate}: {reason}")
            continue
        later = [s for s in manager.all_steps() if s > candidate]
        if later:
            set_aside(manager, later, f"training continues from step {candidate}")
        return state, candidate
    if failed:
        raise CheckpointError(f"no checkpoint in {manager.directory} can be restored: "
                              + "; ".join(failed))
    return None, None


def read_only_manager(directory: str) -> ocp.CheckpointManager:
    """A manager that lists and reads the steps in ``directory`` as they are now."""
    return make_manager(directory, read_only=True)


def restore_params(manager: ocp.CheckpointManager, abstract_part: dict, step: int):
    """Only the subtree ``abstract_part`` of the state saved at ``step``, e.g.
    ``{"ema_params": {"aging": ...}}``; the rest of the state (other parameters, optimizer
    moments) and the data iterator are not read."""
    step = _checked_step(manager, step)
    path = os.path.join(str(manager.directory), str(step), STATE)
    logging.info("Restoring %s of step %d from %s", "/".join(abstract_part), step, manager.directory)
    return ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
        item=abstract_part, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_part),
        partial_restore=True))
