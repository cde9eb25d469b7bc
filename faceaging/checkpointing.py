"""Orbax checkpoints of the train state, the data position and the config.

Training saves all three items and restores with a fallback: a step that does not restore
(truncated files, a missing ``_METADATA``, an emptied data position JSON) is reported and moved to
``WORKDIR/checkpoints_set_aside/``, and the newest earlier step that restores is used; nothing is
deleted. Inference restores only the parameters it needs (``restore_params``, a partial restore
that reads nothing else from disk), retrying when a concurrent trainer deletes the step it read.
"""

from __future__ import annotations

import fnmatch
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from faceaging import files

STATE, DATA, CONFIG = "state", "data", "config"  # the items of every checkpoint step
TMP_MARKER = ".orbax-checkpoint-tmp"  # in the names of Orbax's unfinished step folders
SET_ASIDE = "checkpoints_set_aside"  # beside checkpoints/: steps that were not restored


class CheckpointError(RuntimeError):
    """A checkpoint could not be restored or written; the message says which and why."""


class ResumeRefused(CheckpointError):
    """The checkpoint is intact but does not fit this run (its data or its config changed)."""


class DataOrderChanged(ResumeRefused):
    """The training data (its record count) differs from the checkpoint's."""


def make_manager(directory: str, keep: int | None = None,
                 read_only: bool = False) -> ocp.CheckpointManager:
    """A manager of the step folders in ``directory`` keeping the newest ``keep`` (None: all);
    a writing manager removes unfinished step folders an earlier run left behind."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           read_only=read_only,
                                           cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager(files.epath_of(directory), options=options,
                                 item_names=(STATE, DATA, CONFIG))


def with_shardings(abstract, shardings):
    """Abstract arrays that carry the shardings to restore into."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)


def save(manager: ocp.CheckpointManager, step: int, state, data_state: dict, config_dict: dict,
         force: bool = False) -> bool:
    """Saves state, data position (``input_pipeline.TrainBatches.state()``, the same on every
    process) and config, asynchronously; returns whether a save started. A failure of this or
    the previous save raises ``CheckpointError`` (see ``check_save_errors``)."""
    try:
        return manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
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
    if jax.process_index() != 0 or not files.isdir(directory):
        return []
    names = sorted(n for n in files.listdir(directory) if TMP_MARKER in n)
    for name in names:
        files.rmtree(files.join(directory, name))
    return names


def has_item(manager: ocp.CheckpointManager, step: int, item: str) -> bool:
    return files.isdir(step_path(manager, step, item))


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
        target_root = files.join(files.dirname(directory), SET_ASIDE)
        files.makedirs(target_root)
        for step in sorted(steps):
            target = files.join(target_root, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
            files.rename(step_path(manager, step), target)
            moved.append(target)
            logging.warning("Moved the checkpoint of step %d to %s (%s)", step, target, reason)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("faceaging: checkpoints set aside")
    manager.reload()
    return moved


def saved_data_state(manager: ocp.CheckpointManager, step: int) -> dict:
    """The data position saved in ``step`` (``DataOrderChanged`` for a checkpoint written with
    grain's per-process iterator files by an older faceaging)."""
    if any(fnmatch.fnmatch(name, "process_*-of-*.json")
           for name in files.listdir(step_path(manager, step, DATA))):
        raise DataOrderChanged(
            f"the checkpoint of step {step} in {manager.directory} stores its data position in the "
            "old per-process format. Pass --reset_data_iterator to keep its train state and "
            "start a fresh data order.")
    return manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))[DATA]


def step_path(manager: ocp.CheckpointManager, step: int, *parts) -> str:
    """``CHECKPOINTS/STEP[/PARTS]`` (local or gs://)."""
    return files.join(str(manager.directory), str(step), *parts)


def restore(manager: ocp.CheckpointManager, abstract_state, step: int | None = None,
            check_config=None, check_data=None):
    """(state, step, data position) of the newest step that restores (``step`` only, if given);
    (None, None, None) if there is no checkpoint. The data position is read only when
    ``check_data(saved_data_state, step)`` is given (it may raise ``DataOrderChanged``).

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
            data_state = None
            if check_data is not None:
                data_state = saved_data_state(manager, candidate)
                check_data(data_state, candidate)
            state = manager.restore(candidate, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state)))[STATE]
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
        return state, candidate, data_state
    if failed:
        raise CheckpointError(f"no checkpoint in {manager.directory} can be restored: "
                              + "; ".join(failed))
    return None, None, None


def read_only_manager(directory: str) -> ocp.CheckpointManager:
    """A manager that lists and reads the steps in ``directory`` as they are now."""
    return make_manager(directory, read_only=True)


def restore_params(manager: ocp.CheckpointManager, abstract_part: dict, step: int):
    """Only the subtree ``abstract_part`` of the state saved at ``step``, e.g.
    ``{"ema_params": {"aging": ...}}``; the rest of the state (other parameters, optimizer
    moments) and the data iterator are not read."""
    step = _checked_step(manager, step)
    path = files.epath_of(step_path(manager, step, STATE))
    logging.info("Restoring %s of step %d from %s", "/".join(abstract_part), step, manager.directory)
    return ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
        item=abstract_part, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_part),
        partial_restore=True))
