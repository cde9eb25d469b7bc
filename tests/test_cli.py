import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*flags, timeout=600):
    """Runs the CLI in a fresh process on 8 simulated CPU devices, without the persistent
    compile cache: executables with cross-device collectives loaded from that cache deadlock
    on simulated CPU devices (XLA:CPU rendezvous timeout)."""
    env = {key: value for key, value in os.environ.items() if key != "JAX_COMPILATION_CACHE_DIR"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    return subprocess.run([sys.executable, "-m", "faceaging.main", "--compilation_cache=", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_main_trains_on_8_devices(utk_dirs, tmp_path):
    workdir = tmp_path / "run"
    result = run_main("--config=configs/utk.py:tiny", f"--workdir={workdir}",
                      f"--config.data.manual_dir={utk_dirs[0]}", f"--config.data.data_dir={utk_dirs[1]}",
                      "--config.train.steps=6", "--config.train.checkpoint_every=3",
                      "--config.train.log_every=3", "--config.train.sample_every=6")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 8 device(s)" in result.stderr
    assert "[6] d/adv_fake=" in result.stderr  # scalars reach the log
    assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
    assert (workdir / "samples" / "step_0000006.png").exists()
    assert glob.glob(str(workdir / "tensorboard" / "events.out.tfevents.*"))
    assert (workdir / "config.json").exists()


def test_missing_utkface_exits_nonzero_with_instructions_and_writes_nothing(tmp_path):
    workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
    result = run_main("--config=configs/utk.py:tiny", f"--workdir={workdir}",
                      f"--config.data.manual_dir={tmp_path / 'empty'}",
                      f"--config.data.data_dir={data_dir}")
    assert result.returncode == 1
    assert "UTKFace.tar.gz" in result.stderr and "UTKFace/" in result.stderr
    assert not workdir.exists() and not data_dir.exists()
