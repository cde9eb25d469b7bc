"""Two processes x 4 CPU devices train exactly as one process x 8 devices, through the real CLI.

Processes meet through ``jax.distributed`` on localhost (gloo CPU collectives). What a step
trains on must not depend on the topology (``input_pipeline.GlobalBatches``), so the losses, the
checkpoints and a resume on the other topology all match; a SIGTERM to one process stops both
at the same step with one checkpoint.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from faceaging import checkpointing, files, stopping
from faceaging.workdir import Workdir
from helpers import ROOT, SMALLEST_MODEL_FLAGS, adam_parameter_atol, read_scalars, subprocess_env

STEPS = 6  # checkpoints at 2, 4 and 6
LOSSES = ("g/total", "g/adv", "g/age", "g/cycle", "d/total", "d/adv_real", "d/adv_fake", "d/age")
# Sums over devices in another order (gloo between processes): float32 drift over a few steps
# of ~2e-7 relative here; the per-process shuffling this replaced differed by 3% at step 1.
RTOL = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    """The CLI's processes of one run; each logs to WORKDIR.log.I (files, not pipes: a pipe
    nobody reads would block its process and, through the collectives, every other)."""

    def __init__(self, workdir, processes: list[subprocess.Popen], logs: list[str]):
        self.workdir, self.processes, self.logs = workdir, processes, logs

    def output(self, i: int) -> str:
        with open(self.logs[i]) as f:
            return f.read()

    def wait_for(self, i: int, needle: str, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while needle not in self.output(i):
            if time.time() > deadline or self.processes[i].poll() is not None:
                self.kill()
                pytest.fail(f"process {i} never logged {needle!r}:\n{self.output(i)[-4000:]}")
            time.sleep(0.2)

    def finish(self, expected_code: int = 0, timeout: float = 600) -> list[str]:
        for p in self.processes:
            p.wait(timeout=timeout)
        outputs = [self.output(i) for i in range(len(self.processes))]
        for p, output in zip(self.processes, outputs):
            assert p.returncode == expected_code, output[-4000:]
        return outputs

    def kill(self) -> None:
        for p in self.processes:
            p.kill()


def start(workdir, dirs, processes: int, *flags) -> Run:
    """The CLI on ``processes`` processes sharing 8 CPU devices (no compile cache: executables
    with cross-device collectives loaded from it deadlock on simulated CPU devices)."""
    env = subprocess_env(8 // processes)
    command = [sys.executable, "-m", "faceaging.main", "--compilation_cache=",
               "--config=configs/utk.py:tiny", f"--workdir={workdir}",
               f"--config.data.manual_dir={dirs[0]}", f"--config.data.data_dir={dirs[1]}",
               "--config.train.log_every=1", "--config.train.checkpoint_every=2",
               "--config.train.sample_every=1000", *SMALLEST_MODEL_FLAGS, *flags]
    if processes > 1:
        port = free_port()
        command += ["--jax_distributed", f"--coordinator_address=127.0.0.1:{port}",
                    f"--num_processes={processes}"]
    logs, started = [f"{workdir}.log.{i}" for i in range(processes)], []
    for i, log in enumerate(logs):
        with open(log, "w") as f:
            started.append(subprocess.Popen(
                command + ([f"--process_id={i}"] if processes > 1 else []), cwd=ROOT, env=env,
                stdout=f, stderr=subprocess.STDOUT, text=True))
    return Run(workdir, started, logs)


def train(workdir, dirs, processes: int, steps: int) -> list[str]:
    return start(workdir, dirs, processes, f"--config.train.steps={steps}").finish()


def losses(workdir, steps) -> dict:
    scalars = read_scalars(os.path.join(workdir, "tensorboard"))
    return {tag: [scalars[tag][s] for s in steps] for tag in LOSSES}


def assert_same_losses(got: dict, want: dict) -> None:
    for tag in LOSSES:
        np.testing.assert_allclose(got[tag], want[tag], rtol=RTOL, err_msg=tag)


def saved_state(workdir, step):
    """The train state saved at ``step``, as numpy arrays (whatever topology saved it)."""
    path = os.path.join(workdir, "checkpoints", str(step), checkpointing.STATE)
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path)
    tree = getattr(tree, "item_metadata", tree)  # newer Orbax wraps the tree
    return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)))


def copy_without_last_step(workdir, target) -> str:
    """A copy of the run as it was at step STEPS - 2 (its last checkpoint removed)."""
    shutil.copytree(workdir, target)
    shutil.rmtree(os.path.join(target, "checkpoints", str(STEPS)))
    return str(target)


@pytest.fixture(scope="module")
def runs(utk_dirs, tmp_path_factory):
    """Workdirs trained for STEPS steps as 1 process x 8 devices and 2 processes x 4, and the
    logs of the two processes."""
    root = tmp_path_factory.mktemp("multiprocess")
    one, two = str(root / "one"), str(root / "two")
    one_log = train(one, utk_dirs, 1, STEPS)[0]
    two_logs = train(two, utk_dirs, 2, STEPS)
    return one, two, one_log, two_logs


def test_one_process_on_8_devices_trains_checkpoints_and_writes_its_files(runs):
    one, _, log, _ = runs
    assert "on 8 device(s)" in log and f"[{STEPS}] d/adv_fake=" in log
    assert sorted(os.listdir(os.path.join(one, "checkpoints"))) == ["2", "4", "6"]
    assert os.path.exists(os.path.join(one, "samples", f"step_{STEPS:07d}.png"))
    assert os.path.exists(os.path.join(one, "config.json"))
    assert len(os.listdir(os.path.join(one, "tensorboard"))) == 1


def test_two_processes_train_the_same_steps_as_one(runs):
    one, two, _, logs = runs
    steps = range(1, STEPS + 1)
    want, got = losses(one, steps), losses(two, steps)
    assert_same_losses(got, want)
    print(f"\nstep  g/total 1x8   g/total 2x4   (max relative difference over {len(LOSSES)} "
          "losses)")
    for i, step in enumerate(steps):
        worst = max(abs(got[t][i] - want[t][i]) / abs(want[t][i]) for t in LOSSES)
        print(f"{step:4d}  {want['g/total'][i]:.6f}     {got['g/total'][i]:.6f}     {worst:.2e}")
    for i, log in enumerate(logs):
        assert f"JAX process {i}/2" in log
        assert f"[{STEPS}] d/adv_fake=" in log  # every process logs the (same) losses
    # Each process read its own rows of every global batch (disjoint, together the whole batch;
    # tests/test_input_pipeline.py checks the rows hold the one-process batch's samples).
    assert "Process 0 reads rows 0..4 of every global batch of 8" in logs[0]
    assert "Process 1 reads rows 4..8 of every global batch of 8" in logs[1]

    assert sorted(os.listdir(os.path.join(two, "checkpoints"))) == ["2", "4", "6"]
    a, b = saved_state(one, STEPS), saved_state(two, STEPS)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert int(a["step"]) == int(b["step"]) == STEPS
    optim = json.loads(files.read_text(Workdir(one).config))["optim"]  # the run's own rates
    atol = adam_parameter_atol(max(optim["g_learning_rate"], optim["d_learning_rate"]), STEPS)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=atol)
    # Shared files come from process 0 alone: one event file, one config, one sample grid.
    assert len(os.listdir(os.path.join(two, "tensorboard"))) == 1
    assert os.listdir(os.path.join(two, "samples")) == [f"step_{STEPS:07d}.png"]


def test_a_run_saved_on_two_processes_resumes_on_one_with_the_same_next_losses(
        runs, utk_dirs, tmp_path):
    one, two, _, _ = runs
    resumed = copy_without_last_step(two, tmp_path / "two_then_one")
    log = train(resumed, utk_dirs, 1, STEPS)[0]
    assert f"Restoring checkpoint of step {STEPS - 2}" in log
    last = range(STEPS - 1, STEPS + 1)
    assert_same_losses(losses(resumed, last), losses(two, last))
    assert_same_losses(losses(resumed, last), losses(one, last))


def test_sigterm_to_one_process_stops_both_at_the_same_step_with_one_checkpoint(
        runs, utk_dirs, tmp_path):
    """Also the reverse topology change: a run saved on one process resumes on two."""
    one = runs[0]
    workdir = copy_without_last_step(one, tmp_path / "one_then_two")
    run = start(workdir, utk_dirs, 2, "--config.train.steps=100000",
                "--config.train.checkpoint_every=100000")
    run.wait_for(1, f"[{STEPS}] ")
    run.processes[1].send_signal(signal.SIGTERM)
    outputs = run.finish(expected_code=stopping.EXIT_PREEMPTED, timeout=300)
    stopped = [int(output.split("preempted: stopped at step ")[1].split()[0]) for output in outputs]
    assert stopped[0] == stopped[1] >= STEPS
    assert "another process was asked to stop" in outputs[0]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int) == [
        "2", "4", str(stopped[0])]
    assert not os.path.exists(os.path.join(workdir, "train.lock"))
    last = range(STEPS - 1, STEPS + 1)
    assert_same_losses(losses(workdir, last), losses(one, last))
