"""One trainer per workdir: ``WORKDIR/train.lock`` holds the owner's host, PID and start time.

A second trainer is refused with the owner's details. A lock left by a trainer that died
without releasing it (SIGKILL, a lost VM) is taken over automatically when its owner was on
this host and its PID is gone; a lock from another host cannot be checked from here and is
broken only on request (``--break_lock``). In a multi-process run process 0 holds the lock and
every process learns whether it got it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

LOCK_NAME = "train.lock"


class WorkdirUnavailable(RuntimeError):
    """The workdir cannot be trained in: not writable, or another trainer holds it."""


class WorkdirLocked(WorkdirUnavailable):
    """Another trainer holds the workdir."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_owner(path: str) -> dict | None:
    """The lock's owner record, {} if unreadable, None if there is no lock."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    if not owner:
        return "an unreadable owner record"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return f"PID {owner.get('pid')} on host {owner.get('host')!r}, started {started}"


def _is_stale(owner: dict | None) -> bool:
    return (bool(owner) and owner.get("host") == socket.gethostname()
            and not _pid_alive(int(owner.get("pid", -1))))


def _try_create(path: str) -> bool:
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(record)
    return True


def acquire(workdir: str, break_lock: bool = False) -> str:
    """Creates ``workdir`` (if needed) and its lock; returns the lock's path. Raises
    ``WorkdirLocked`` if another live trainer holds it, ``WorkdirUnavailable`` if the workdir
    cannot be written."""
    path = os.path.join(workdir, LOCK_NAME)
    for _ in range(3):  # a lock released or broken between our checks: try again
        try:
            os.makedirs(workdir, exist_ok=True)
            if _try_create(path):
                return path
        except OSError as e:
            raise WorkdirUnavailable(f"cannot write to the workdir {workdir}: {e.strerror or e}") from e
        owner = read_owner(path)
        if owner is None:
            continue
        if _is_stale(owner) or break_lock:
            logging.warning("Breaking the lock of %s held by %s (%s).", workdir, _describe(owner),
                            "requested" if break_lock else "that process is gone")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        raise WorkdirLocked(
            f"{workdir} is being trained by {_describe(owner)} (lock file {path}). Use another "
            "--workdir; if no trainer runs there any more (e.g. its machine was lost), pass "
            "--break_lock.")
    raise WorkdirLocked(f"could not take the lock {path}: other processes keep taking it")


def release(path: str) -> None:
    """Removes the lock if this process still owns it."""
    owner = read_owner(path)
    if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def hold(workdir: str, break_lock: bool = False):
    """Holds the workdir's lock for the duration of the block (process 0 takes it; every process
    raises ``WorkdirUnavailable`` if it could not). A workdir this created and left empty is
    removed again."""
    path, error, existed = None, None, os.path.isdir(workdir)
    if jax.process_index() == 0:
        try:
            path = acquire(workdir, break_lock)
        except WorkdirUnavailable as e:
            error = e
    if jax.process_count() > 1:
        ok = multihost_utils.broadcast_one_to_all(np.array(error is None))
        if not ok and error is None:
            error = WorkdirUnavailable(f"process 0 could not take the lock of {workdir}")
    if error is not None:
        raise error
    try:
        yield path
    finally:
        if path is not None:
            release(path)
            if not existed:  # a run that failed before writing anything leaves no empty workdir
                with contextlib.suppress(OSError):
                    os.rmdir(workdir)
