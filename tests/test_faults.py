"""The fault suite: each way a long run can be hurt, done for real, and what must survive it.

Bad files in the manual folder, a rebuilt dataset, a non-finite streak, SIGINT/SIGTERM/SIGKILL,
a corrupted latest checkpoint, a full disk, a second trainer, bad configs, a changed config on
resume, and predict reading a step that a trainer deletes. Training runs are `configs/utk.py:tiny`
on one device; the three subprocess runs share one compile cache of this module.
"""

import glob
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
from PIL import Image
import pytest

from faceaging import checkpointing, config as config_lib, config_checks, input_pipeline, run as run_lib
from faceaging import small_models, stopping, train, workdir_lock
from faceaging.datasets import utkface
from faceaging.workdir import Workdir
from helpers import ROOT, main_in_process, start_cli, subprocess_env, wait_for_line, write_utkface_folder

NUM_IMAGES = 24


@pytest.fixture(scope="module")
def fault_dirs(tmp_path_factory):
    """(manual_dir, data_dir) of 24 well-formed UTKFace-named images, built."""
    root = tmp_path_factory.mktemp("faults")
    write_utkface_folder(root / "manual" / "UTKFace", NUM_IMAGES, malformed=False)
    dirs = str(root / "manual"), str(root / "tfds")
    utkface.prepare(dirs[1], dirs[0])
    return dirs


def tiny_config(dirs, **train_fields):
    config = config_lib.tiny(config_lib.base_config())
    config.data.manual_dir, config.data.data_dir = dirs
    config.mesh.num_devices = 1
    config.train.update(dict(steps=6, checkpoint_every=3, log_every=1, sample_every=100))
    config.train.update(train_fields)
    return config


@pytest.fixture(scope="module")
def trained(fault_dirs, tmp_path_factory):
    """A workdir trained to step 6, with checkpoints of steps 3 and 6 (copy it before changing)."""
    workdir = str(tmp_path_factory.mktemp("trained") / "run")
    train.train_and_evaluate(tiny_config(fault_dirs), workdir)
    return workdir


def copy_run(trained, tmp_path) -> str:
    workdir = str(tmp_path / "run")
    shutil.copytree(trained, workdir)
    return workdir


def steps_in(workdir) -> list:
    return sorted(int(n) for n in os.listdir(Workdir(workdir).checkpoints) if n.isdigit())


def unfinished_in(workdir) -> list:
    return [n for n in os.listdir(Workdir(workdir).checkpoints) if checkpointing.TMP_MARKER in n]


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((200, 200, 3), 120, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


# --- Bad data ---------------------------------------------------------------------------------

def test_undecodable_files_are_left_out_and_listed_with_their_reason(tmp_path):
    folder = tmp_path / "manual" / "UTKFace"
    good = write_utkface_folder(folder, 12, malformed=False)
    bad = {"truncated": jpeg_bytes()[:400], "empty": b"", "text": b"not an image\n"}
    bad_names = {}
    for i, (kind, data) in enumerate(bad.items()):
        name = f"30_0_0_2018{i:013d}.jpg.chip.jpg"
        (folder / name).write_bytes(data)
        bad_names[kind] = name
    builder = utkface.prepare(str(tmp_path / "tfds"), str(tmp_path / "manual"))

    built = sum(split.num_examples for split in builder.info.splits.values())
    assert built == len(good)
    listed = sum(builder.info.metadata["skipped_files"]["undecodable"].values(), [])
    reasons = dict(line.split(": ", 1) for line in listed)
    assert sorted(reasons) == sorted(bad_names.values())
    assert reasons[bad_names["empty"]] == "empty file"
    assert "truncated" in reasons[bad_names["truncated"]].lower()
    assert "cannot identify image file" in reasons[bad_names["text"]]


def test_a_record_that_does_not_decode_names_its_file():
    decode = input_pipeline.Decode(32)
    good = decode.map({"image": jpeg_bytes(), "file_name": b"30_0_0_1.jpg.chip.jpg", "age": 30})
    assert good["image"].shape == (32, 32, 3) and "file_name" not in good
    with pytest.raises(input_pipeline.ImageDecodeError, match=r"31_0_0_2\.jpg\.chip\.jpg"):
        decode.map({"image": jpeg_bytes()[:400], "file_name": b"31_0_0_2.jpg.chip.jpg", "age": 31})


def test_a_rebuilt_dataset_is_refused_on_resume_unless_the_data_order_is_reset(
        fault_dirs, trained, tmp_path):
    workdir = copy_run(trained, tmp_path)
    rebuilt = str(tmp_path / "manual"), str(tmp_path / "tfds")
    write_utkface_folder(os.path.join(rebuilt[0], "UTKFace"), NUM_IMAGES + 1, malformed=False)
    config = tiny_config(rebuilt, steps=9)
    with pytest.raises(checkpointing.DataOrderChanged,
                       match=r"step 6 .*records=24.*records=25.*--reset_data_iterator"):
        train.train_and_evaluate(config, workdir)
    assert steps_in(workdir) == [3, 6]  # nothing lost

    state = train.train_and_evaluate(config, workdir, train.ResumeOptions(reset_data_iterator=True))
    assert int(state.step) == 9 and steps_in(workdir) == [3, 6, 9]


# --- Non-finite updates -----------------------------------------------------------------------

def test_a_nonfinite_streak_stops_without_checkpointing_and_a_fixed_run_continues(
        fault_dirs, trained, tmp_path):
    workdir = copy_run(trained, tmp_path)
    # Updates are skipped from step 7 or 8; the checkpoint step 9 falls inside the streak
    # (at most 4 allowed: the run stops at step 11 or 12).
    broken = tiny_config(fault_dirs, steps=30, max_nonfinite_steps=4)
    broken.optim.g_learning_rate = broken.optim.d_learning_rate = 1e30
    with pytest.raises(train.NonFiniteLossError, match=r"last good checkpoint is step 6"):
        train.train_and_evaluate(broken, workdir, train.ResumeOptions(allow_config_changes=True))
    assert steps_in(workdir) == [3, 6]  # no checkpoint of skipped updates

    # The streak is not stored: the same run with its learning rate back continues from step 6.
    state = train.train_and_evaluate(tiny_config(fault_dirs, steps=9), workdir)
    assert int(state.step) == 9 and steps_in(workdir) == [3, 6, 9]
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.g_params)))


# --- Stopping ---------------------------------------------------------------------------------

def test_sigint_saves_the_current_step_and_raises_preempted(fault_dirs, trained, tmp_path,
                                                           monkeypatch):
    workdir = copy_run(trained, tmp_path)
    calls = []
    original = checkpointing.check_save_errors

    def signal_on_third_step(manager):  # called once per step by the loop
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        original(manager)

    monkeypatch.setattr(checkpointing, "check_save_errors", signal_on_third_step)
    with pytest.raises(stopping.Preempted, match="stopped at step 9 .SIGINT."):
        train.train_and_evaluate(tiny_config(fault_dirs, steps=10_000, checkpoint_every=10_000),
                                 workdir)
    assert steps_in(workdir) == [3, 6, 9] and not unfinished_in(workdir)
    assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))  # released


def test_a_stop_while_a_guide_trains_ends_its_training_at_once_and_saves_nothing(
        fault_dirs, tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    config = tiny_config(fault_dirs)
    config.loss.age_guide = 1.0
    config.age_guide.steps = 2_000  # minutes of training if the request were left for the loop

    class SignalOnThirdBatch(small_models.Batches):
        def __iter__(self):
            for i, batch in enumerate(super().__iter__()):
                if i == 2:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch

    monkeypatch.setattr(small_models, "Batches", SignalOnThirdBatch)
    with pytest.raises(stopping.Preempted, match="while training the age guide .SIGTERM., before "
                       "the first step; nothing new was saved") as stopped:
        train.train_and_evaluate(config, workdir)
    assert stopped.value.step is None
    run_dir = Workdir(workdir)
    assert not os.path.isdir(run_dir.age_guide) or not os.listdir(run_dir.age_guide)
    assert not os.path.isdir(run_dir.checkpoints) or not steps_in(workdir)
    assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))  # released


def test_a_second_ctrl_c_aborts_at_once():
    with stopping.StopRequests() as requests:
        os.kill(os.getpid(), signal.SIGINT)
        assert requests.reason == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is not requests._handle  # handlers restored


@pytest.fixture(scope="module")
def subprocess_cache(tmp_path_factory):
    """A compile cache the module's CLI subprocesses share (one device: safe to cache)."""
    return str(tmp_path_factory.mktemp("cli-cache"))


# SIGTERM: tests/test_multiprocess.py (sent to one process of two: both save the same step and
# exit 75, the lock is released).


def test_sigkill_during_a_save_loses_nothing_and_the_next_run_resumes(
        fault_dirs, subprocess_cache, tmp_path):
    workdir = str(tmp_path / "run")
    checkpoints = Workdir(workdir).checkpoints
    process = start_cli(fault_dirs, workdir, subprocess_cache, "--config.train.checkpoint_every=1",
                        "--config.train.keep_checkpoints=2")
    wait_for_line(process, "[3] ")
    caught_mid_save, deadline = False, time.time() + 120
    while time.time() < deadline and process.poll() is None:
        names = os.listdir(checkpoints)
        if any(checkpointing.TMP_MARKER in n for n in names) and any(n.isdigit() for n in names):
            process.kill()
            caught_mid_save = True
            break
        time.sleep(0.002)
    process.kill()
    process.communicate()
    assert caught_mid_save, "no save was under way within two minutes"
    complete = checkpointing.read_only_manager(checkpoints).latest_step()
    assert complete is not None

    # The dead trainer's lock (same host, PID gone) is broken; its unfinished folder removed.
    config = tiny_config(fault_dirs, steps=complete + 1)
    state = train.train_and_evaluate(config, workdir)
    assert int(state.step) == complete + 1
    assert not unfinished_in(workdir) and complete + 1 in steps_in(workdir)


FULL_DISK_SCRIPT = """
set -e
mount -t tmpfs -o size={size} tmpfs "$WORKDIR"
set +e
"$PYTHON" -m faceaging.main "$@"
echo "exit=$?" > "$REPORT/exit"
cp -a "$WORKDIR/." "$REPORT/workdir"
"""


def test_a_full_disk_fails_the_save_in_one_line_and_keeps_the_previous_checkpoint(
        fault_dirs, subprocess_cache, tmp_path):
    """A 6 MiB tmpfs workdir (in a private mount namespace) holds one 3.8 MiB checkpoint but not
    two: the second save fails."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount a small tmpfs")
    workdir, report = tmp_path / "run", tmp_path / "report"
    workdir.mkdir()
    report.mkdir()
    probe = subprocess.run(["unshare", "-r", "-m", "sh", "-c",
                            f"mount -t tmpfs -o size=1m tmpfs {workdir}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace: {probe.stderr.decode()[:200]}")
    env = subprocess_env(1, WORKDIR=str(workdir), REPORT=str(report), PYTHON=sys.executable)
    result = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", FULL_DISK_SCRIPT.format(size="6m"), "sh",
         "--config=configs/utk.py:tiny", f"--workdir={workdir}",
         f"--compilation_cache={subprocess_cache}", f"--config.data.manual_dir={fault_dirs[0]}",
         f"--config.data.data_dir={fault_dirs[1]}", "--config.train.steps=100",
         "--config.train.checkpoint_every=2", "--config.train.log_every=1",
         "--config.train.sample_every=100000"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert (report / "exit").read_text().strip() == "exit=1", result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr[-3000:]
    assert "newest complete checkpoint is step 2" in errors[0]
    # Noticed within two steps of the failed save (step 4), without a single stack trace.
    logged = [int(line.split("] [")[1].split("]")[0]) for line in result.stderr.splitlines()
              if "writer.py" in line and "] [" in line]
    assert max(logged) <= 6, logged
    assert "Traceback" not in result.stderr
    kept = str(report / "workdir")
    assert steps_in(kept) == [2] and not unfinished_in(kept)
    assert run_lib.load(kept).step == 2  # the checkpoint before the failure still restores


# --- Checkpoints ------------------------------------------------------------------------------

def save_toy_steps(directory, steps=(1, 2)):
    manager = checkpointing.make_manager(directory)
    for step in steps:
        state = {"w": np.full((64, 64), step, np.float32), "b": np.arange(step, step + 4.0)}
        checkpointing.save(manager, step, state, {"position": 8 * step, "records": 10},
                           {"step": step})
        manager.wait_until_finished()
    manager.close()
    return jax.eval_shape(lambda: state)


def largest_array_file(step_dir) -> str:
    files = [p for p in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
             if os.path.isfile(p)]
    return max(files, key=os.path.getsize)


CORRUPTIONS = {
    "array file deleted": lambda d: os.remove(largest_array_file(d)),
    "array file truncated": lambda d: os.truncate(largest_array_file(d), 10),
    "data position JSON emptied": lambda d: open(os.path.join(d, "data", "metadata"), "w").close(),
    "_METADATA deleted": lambda d: os.remove(os.path.join(d, "state", "_METADATA")),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_step(corruption, tmp_path, caplog):
    directory = str(tmp_path / "checkpoints")
    abstract = save_toy_steps(directory)
    CORRUPTIONS[corruption](os.path.join(directory, "2"))

    manager = checkpointing.make_manager(directory)
    with caplog.at_level("WARNING"):
        state, step, data_state = checkpointing.restore(manager, abstract,
                                                        check_data=lambda saved, step: None)
    assert step == 1 and state["w"][0, 0] == 1
    assert data_state == {"position": 8, "records": 10}  # step 1's data position
    assert "The checkpoint of step 2 cannot be restored" in caplog.text
    assert manager.all_steps() == [1]
    set_aside = os.listdir(tmp_path / checkpointing.SET_ASIDE)
    assert len(set_aside) == 1 and set_aside[0].startswith("2-")  # moved, not deleted


def test_an_explicit_restore_step_that_is_damaged_is_an_error_and_later_steps_are_set_aside(tmp_path):
    directory = str(tmp_path / "checkpoints")
    abstract = save_toy_steps(directory, steps=(1, 2, 3))
    CORRUPTIONS["_METADATA deleted"](os.path.join(directory, "2"))
    manager = checkpointing.make_manager(directory)
    with pytest.raises(checkpointing.CheckpointError, match="step 2"):
        checkpointing.restore(manager, abstract, step=2)
    assert manager.all_steps() == [1, 2, 3]  # an error moves nothing

    state, step, _ = checkpointing.restore(manager, abstract, step=1)
    assert step == 1 and manager.all_steps() == [1]
    assert len(os.listdir(tmp_path / checkpointing.SET_ASIDE)) == 2  # steps 2 and 3, kept


def test_predict_reads_the_newest_step_again_when_a_trainer_deletes_the_one_it_reads(
        trained, tmp_path, monkeypatch):
    workdir = copy_run(trained, tmp_path)
    with open(Workdir(workdir).config) as f:
        changed = json.load(f)
    changed["image_size"] = 64  # config.json of a later run: each checkpoint has its own config
    with open(Workdir(workdir).config, "w") as f:
        json.dump(changed, f)
    original, calls = run_lib._load_step, []

    def trainer_deletes_step_6_first(workdir_, manager, step, generators):
        calls.append(step)
        if len(calls) == 1:
            shutil.rmtree(os.path.join(Workdir(workdir).checkpoints, str(step)))
        return original(workdir_, manager, step, generators)

    monkeypatch.setattr(run_lib, "_load_step", trainer_deletes_step_6_first)
    run = run_lib.load(workdir)
    assert calls == [6, 3] and run.step == 3 and run.config.image_size == 32


# --- The workdir and the config ---------------------------------------------------------------

def test_a_second_trainer_is_refused_before_any_work(fault_dirs, tmp_path):
    workdir = str(tmp_path / "run")
    lock = workdir_lock.acquire(workdir)  # this live process holds it
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(workdir_lock.WorkdirLocked, match=f"PID {os.getpid()} on host"):
        train.train_and_evaluate(tiny_config((fault_dirs[0], data_dir)), workdir)
    assert os.listdir(workdir) == [workdir_lock.LOCK_NAME] and not os.path.exists(data_dir)
    workdir_lock.release(lock)
    assert not os.path.exists(lock)


def test_stale_locks_are_broken_on_this_host_and_on_request_from_another(tmp_path):
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    lock = os.path.join(workdir, workdir_lock.LOCK_NAME)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    with open(lock, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": finished.pid, "started": 0}, f)
    assert workdir_lock.acquire(workdir) == lock  # its owner is gone: taken over
    assert workdir_lock.read_owner(lock)["pid"] == os.getpid()

    with open(lock, "w") as f:
        json.dump({"host": "another-host", "pid": 1, "started": 0}, f)
    with pytest.raises(workdir_lock.WorkdirLocked, match="another-host.*--break_lock"):
        workdir_lock.acquire(workdir)
    assert workdir_lock.acquire(workdir, break_lock=True) == lock


def test_config_errors_are_one_line_each_before_anything_is_written(fault_dirs, tmp_path, capsys):
    workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
    code = main_in_process(
        "--config=configs/utk.py:tiny", f"--workdir={workdir}",
        f"--config.data.manual_dir={fault_dirs[0]}", f"--config.data.data_dir={data_dir}",
        "--config.train.batch_size=0", "--config.train.keep_checkpoints=0",
        "--config.train.checkpoint_every=0", "--config.image_size=30",
        "--config.mesh.num_devices=99", "--config.loss.gate=0.1", "--config.model.gate_bias=nan",
        "--config.loss.gate_exponent=0", "--config.loss.gate_floor=-1",
        "--config.loss.change_smoothness_sigma=0",
        "--config.loss.identity_encoder=decoder",
        "--config.model.warp_max_shift=0.1", "--config.attribute_guide.feature_layers=(0,2)")
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert code == 1
    assert errors == [
        "error: config.image_size=30: expected a multiple of 4 (the product of model.encoder_factors)",
        "error: config.loss.identity_encoder='decoder': expected one of restoring, aging",
        "error: config.model.gate_bias=nan: expected a finite number",
        "error: config.loss.gate_exponent=0.0: expected a finite number > 0",
        "error: config.loss.gate_floor=-1.0: expected a finite number > 0",
        "error: config.loss.change_smoothness_sigma=0.0: expected a finite number > 0",
        "error: config.model.warp_max_shift=0.1: expected 0 unless config.model.residual_output "
        "or config.model.output_mask is on",
        "error: config.attribute_guide.feature_layers=(0, 2): expected a non-empty tuple of "
        "indices into attribute_guide.channels (-2 to 1)",
        "error: config.loss.gate=0.1: expected 0 without an output gate (set config.model.output_mask=True)",
        "error: config.train.batch_size=0: expected a positive integer",
        "error: config.train.checkpoint_every=0: expected a positive integer",
        "error: config.train.keep_checkpoints=0: expected a positive integer",
        f"error: config.mesh.num_devices=99: expected -1 (every device) or 1 to "
        f"{jax.device_count()} (the devices present)"]
    assert not workdir.exists() and not data_dir.exists()


def test_an_unwritable_workdir_is_one_line_before_the_data_is_prepared(fault_dirs, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    data_dir = tmp_path / "tfds"
    code = main_in_process("--config=configs/utk.py:tiny", f"--workdir={blocker / 'run'}",
                           f"--config.data.manual_dir={fault_dirs[0]}",
                           f"--config.data.data_dir={data_dir}")
    assert code == 1
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert errors == [f"error: cannot write to the workdir {blocker / 'run'}: Not a directory"]
    assert not data_dir.exists()


def test_resuming_with_a_changed_config_lists_the_fields(fault_dirs, trained, tmp_path):
    workdir = copy_run(trained, tmp_path)
    faster = tiny_config(fault_dirs, steps=9)
    faster.optim.g_learning_rate = 1e-3
    with pytest.raises(train.ConfigChanged,
                       match=r"optim.g_learning_rate: 0.0005 -> 0.001.*--allow_config_changes"):
        train.train_and_evaluate(faster, workdir)
    bigger = tiny_config(fault_dirs, steps=9)
    bigger.image_size, bigger.model.style_dim = 64, 16
    with pytest.raises(train.ConfigChanged, match=r"image_size: 32 -> 64; model.style_dim: 32 -> 16"):
        train.train_and_evaluate(bigger, workdir, train.ResumeOptions(allow_config_changes=True))
    assert steps_in(workdir) == [3, 6]


def test_a_field_newer_than_the_checkpoint_counts_at_its_default_on_resume(fault_dirs, tmp_path):
    """A checkpoint saved before train.d_augment and model.spatial_age existed trained without
    them: turning either on when resuming is a change (permission, resp. refusal), leaving them
    at their defaults is none."""
    current = tiny_config(fault_dirs)
    saved = config_lib.to_dict(current)
    del saved["train"]["d_augment"], saved["model"]["spatial_age"]
    saved["model"]["a_field_removed_since"] = 1  # ignored
    assert config_checks.resume_changes(saved, current) == {
        "incompatible": [], "needs_permission": [], "free": []}
    current.train.d_augment, current.model.spatial_age = "cutout", True
    changes = config_checks.resume_changes(saved, current)
    predates = " (the checkpoint predates the field: its default assumed)"
    assert changes == {"incompatible": ["model.spatial_age: False -> True" + predates],
                       "needs_permission": ["train.d_augment: '' -> 'cutout'" + predates],
                       "free": []}
    # A checkpoint older than configs in checkpoints: the workdir's config.json is compared, as
    # saved, so the refusal names the field it predates too.
    run_dir = Workdir(str(tmp_path))
    with open(run_dir.config, "w") as f:
        json.dump(saved, f)
    current.model.spatial_age = False
    with pytest.raises(train.ConfigChanged, match=re.escape(
            "train.d_augment: '' -> 'cutout'" + predates + ". Pass --allow_config_changes")):
        train.config_checker(current, run_dir, allow_changes=False)(None, 3)
