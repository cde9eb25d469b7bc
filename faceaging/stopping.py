"""Stopping a run safely: SIGTERM and SIGINT ask the loop to checkpoint the current step and stop.

The first signal only sets a request; the loop saves at the step it is on and raises
``Preempted``, which the command line turns into exit code ``EXIT_PREEMPTED`` (75, "temporary
failure, run me again" in sysexits.h), so requeue scripts can tell a stop worth resuming from
success (0) and from an error (1). A second Ctrl-C aborts at once (KeyboardInterrupt). Orbax's
preemption notice (``reached_preemption``) is honoured too. In a multi-process run the processes
share their requests every step, so all stop at the same step. A request while a frozen guide
trains (before the loop's first step) stops that training at once and saves nothing: the next run
trains the guide again.
"""

from __future__ import annotations

import signal

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped early on request: after saving the checkpoint of ``step``, or, when
    ``step`` is None, while ``doing`` the work before the first step (a guide's training), with
    nothing new saved."""

    def __init__(self, step: int | None, reason: str, doing: str = ""):
        if step is None:
            stopped = f"stopped while {doing} ({reason}), before the first step; nothing new was saved"
        else:
            stopped = f"stopped at step {step} ({reason}) after saving its checkpoint"
        super().__init__(f"{stopped}; run the same command again to resume")
        self.step = step
        self.reason = reason


class StopRequests:
    """Installs SIGTERM/SIGINT handlers for a ``with`` block and answers ``requested(step)``."""

    def __init__(self):
        self.reason: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        del frame
        name = signal.Signals(signum).name
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
        logging.warning("Received %s: stopping (exit code %d) after saving the current step's "
                        "checkpoint; before the first step (a guide training), at once with "
                        "nothing saved.", name, EXIT_PREEMPTED)
        self.reason = self.reason or name

    def __enter__(self) -> "StopRequests":
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def check_before_the_loop(self, doing: str) -> None:
        """Raises ``Preempted`` now if a stop was requested: for the work before the loop's first
        step (training a guide), which would otherwise run to its end before anyone asks. One
        process only (guides are trained on one), so no agreement between processes is needed."""
        if self.reason is not None:
            raise Preempted(None, self.reason, doing)

    def requested(self, step: int, manager) -> bool:
        """Whether to stop after ``step``: a signal here, Orbax's preemption notice, or (in a
        multi-process run) any process's request."""
        if self.reason is None and manager.reached_preemption(step):
            self.reason = "preemption notice"
        local = self.reason is not None
        if jax.process_count() == 1:
            return local
        anyone = bool(np.any(multihost_utils.process_allgather(np.array(local))))
        if anyone and not local:
            self.reason = "another process was asked to stop"
        return anyone
