"""One trainer per workdir: ``WORKDIR/train.lock`` holds the owner's host, PID and start time.

A second trainer is refused with the owner's details. A lock left by a trainer that died
without releasing it (SIGKILL, a lost VM) is taken over automatically when its owner was on
this host and its PID is gone; a lock from another host cannot be checked from here and is
broken only on request (``--break_lock``). In a multi-process run process 0 holds the lock and
every process learns whether it got it. In a bucket (``gs://``), which has no exclusive create
through ``files``, the lock is written if absent and read back after a moment: of two trainers
starting within that moment, one may not notice the other.
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

from faceaging import files

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
        return json.loads(files.read_text(path))
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


REMOTE_SETTLE_SECONDS = 1.0  # how long a bucket lock is left before it is read back


def _try_create(path: str) -> bool:
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
             "token": os.urandom(8).hex()}
    record = json.dumps(owner)
    if files.is_remote(path):
        if files.exists(path):
            return False
        files.write_text(path, record)
        time.sleep(REMOTE_SETTLE_SECONDS)
        return read_owner(path) == owner
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
    path = files.join(workdir, LOCK_NAME)
    for _ in range(3):  # a lock released or broken between our checks: try again
        try:
            files.makedirs(workdir)
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
                files.remove(path)
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
            files.remove(path)


@contextlib.contextmanager
def hold(workdir: str, break_lock: bool = False):
    """Holds the workdir's lock for the duration of the block (process 0 takes it; every process
    raises ``WorkdirUnavailable`` if it could not). A workdir this created and left empty is
    removed again."""
    workdir = files.absolute(workdir)
    path, error, existed = None, None, files.isdir(workdir)
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
            # A run that failed before writing anything leaves no empty workdir (a bucket has
            # no empty folders).
            if not existed and not files.is_remote(workdir):
                with contextlib.suppress(OSError):
                    os.rmdir(workdir)
